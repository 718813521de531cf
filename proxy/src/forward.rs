//! Sending a call on through a pooled HTTP/2 client, shared by the inbound
//! (to the app) and outbound (to a peer sidecar) sides: the response streams
//! back untouched, and a failure becomes `UNAVAILABLE` naming the upstream
//! and the reason.

use std::{
    convert::Infallible,
    error::Error as StdError,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::Response;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::{Error as ClientError, ResponseFuture};

use crate::{
    body::ProxyBody,
    grpc::{Code, status},
};

/// The response of a forwarded call. A named future rather than a boxed one:
/// the client's future is already boxed, this adds no second allocation.
pub struct ForwardFuture {
    inner: ResponseFuture,
    /// The upstream, for messages: `catalog (127.0.0.1:7202)`.
    upstream: Arc<str>,
}

impl ForwardFuture {
    pub fn new(inner: ResponseFuture, upstream: Arc<str>) -> Self {
        ForwardFuture { inner, upstream }
    }
}

impl Future for ForwardFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.inner).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(rsp)) => Poll::Ready(Ok(rsp.map(Either::Left))),
            Poll::Ready(Err(error)) => {
                let reason = reason(&error);
                tracing::warn!(upstream = %self.upstream, %reason, "call failed");
                let message = format!("{} is unavailable: {reason}", self.upstream);
                Poll::Ready(Ok(status::response(Code::Unavailable, &message)))
            }
        }
    }
}

/// Forwarding a request with a body the client accepts.
pub type Client<C> = hyper_util::client::legacy::Client<C, Incoming>;

/// The most useful words for why a call failed: a connector's own error
/// (which already says what happened, e.g. an identity mismatch), else a
/// short name for common socket errors, else the innermost error's text.
pub fn reason(error: &ClientError) -> String {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    let mut innermost: &(dyn StdError + 'static) = error;
    while let Some(e) = source {
        if let Some(connect) = e.downcast_ref::<crate::outbound::ConnectError>() {
            return connect.to_string();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return crate::error::io_reason(io);
        }
        innermost = e;
        source = e.source();
    }
    innermost.to_string()
}
