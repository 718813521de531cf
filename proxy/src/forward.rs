//! Sending a call on through a pooled HTTP/2 client, shared by the inbound
//! (to the app) and outbound (to a peer sidecar) sides: the response streams
//! back untouched, and a failure becomes `UNAVAILABLE` naming the upstream
//! and the reason.
//!
//! When the failure proves the request never reached the upstream (no
//! connection could be made, the stream was refused, or a GOAWAY did not
//! cover it), the `UNAVAILABLE` carries the header [`NOT_PROCESSED`]. The
//! inbound sidecar's answer thus tells the caller's outbound sidecar that
//! the app never saw the call, so even a non-idempotent call may be retried.
//! The marker is only believed from a sidecar: an app's response has it
//! removed on the way out of the inbound sidecar.

use std::{
    convert::Infallible,
    error::Error as StdError,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderName, HeaderValue, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::{Error as ClientError, ResponseFuture};

use crate::{
    body::ProxyBody,
    grpc::{Code, status},
};

/// Response header on a sidecar's `UNAVAILABLE`: the call never reached
/// the app (or the peer), so sending it again cannot do anything twice.
pub const NOT_PROCESSED: HeaderName = HeaderName::from_static("meshwork-not-processed");

/// The response of a forwarded call. A named future rather than a boxed one:
/// the client's future is already boxed, this adds no second allocation.
pub struct ForwardFuture {
    inner: ResponseFuture,
    /// The upstream, for messages: `catalog (127.0.0.1:7202)`.
    upstream: Arc<str>,
    /// Whether the upstream is a peer sidecar, whose [`NOT_PROCESSED`]
    /// marker is kept; an app's is removed.
    from_sidecar: bool,
}

impl ForwardFuture {
    /// A call to an app: a [`NOT_PROCESSED`] header from it is dropped.
    pub fn new(inner: ResponseFuture, upstream: Arc<str>) -> Self {
        ForwardFuture {
            inner,
            upstream,
            from_sidecar: false,
        }
    }

    /// A call to a peer sidecar, whose [`NOT_PROCESSED`] marker is kept.
    pub fn to_sidecar(inner: ResponseFuture, upstream: Arc<str>) -> Self {
        ForwardFuture {
            inner,
            upstream,
            from_sidecar: true,
        }
    }
}

impl Future for ForwardFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.inner).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(mut rsp)) => {
                if !self.from_sidecar {
                    rsp.headers_mut().remove(NOT_PROCESSED);
                }
                Poll::Ready(Ok(rsp.map(Either::Left)))
            }
            Poll::Ready(Err(error)) => {
                let reason = reason(&error);
                tracing::warn!(upstream = %self.upstream, %reason, "call failed");
                let message = format!("{} is unavailable: {reason}", self.upstream);
                let mut rsp = status::response(Code::Unavailable, &message);
                if never_sent(&error) {
                    rsp.headers_mut().insert(NOT_PROCESSED, HeaderValue::from_static("1"));
                }
                Poll::Ready(Ok(rsp))
            }
        }
    }
}

/// Forwarding a request with a body the client accepts.
pub type Client<C> = hyper_util::client::legacy::Client<C, Incoming>;

/// Whether the request provably never reached the upstream: no connection
/// could be made (TCP, TLS), the request was cancelled before it was sent,
/// the stream was refused (`REFUSED_STREAM`), or the upstream's GOAWAY did
/// not cover it (h2 fails exactly the streams above the GOAWAY's last
/// stream id with a remote GOAWAY error).
pub fn never_sent(error: &ClientError) -> bool {
    if error.is_connect() {
        return true;
    }
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            return h2.is_remote() && (refused || h2.is_go_away());
        }
        source = e.source();
    }
    false
}

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
