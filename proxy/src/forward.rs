//! Sending a call on through a pooled HTTP/2 client, shared by the inbound
//! (to the app) and outbound (to a peer sidecar) sides: the request's URI is
//! pointed at the upstream, the response streams back untouched, and a
//! failure becomes `UNAVAILABLE` naming the upstream and the reason.
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
    future::{Future, Ready, ready},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::Either;
use http::{
    HeaderName, HeaderValue, Request, Response, Uri,
    uri::{Authority, Scheme},
};
use http_body::Body;
use hyper_util::{
    client::legacy::{Client, Error as ClientError, ResponseFuture, connect::Connect},
    rt::{TokioExecutor, TokioTimer},
};
use tower::Service;

use crate::{
    body::ProxyBody,
    grpc::{Code, status},
    options::Settings,
};

/// Response header on a sidecar's `UNAVAILABLE`: the call never reached
/// the app (or the peer), so sending it again cannot do anything twice.
pub const NOT_PROCESSED: HeaderName = HeaderName::from_static("meshwork-not-processed");

/// Where a forwarder sends its calls.
pub struct Upstream {
    /// `http` to an app, `https` to a peer sidecar (the connector does TLS).
    pub scheme: Scheme,
    /// `:authority` of forwarded calls, which is also the client's pool key.
    pub authority: Authority,
    /// How messages name it: `catalog (127.0.0.1:7202)`.
    pub label: Box<str>,
    /// A peer sidecar, whose [`NOT_PROCESSED`] marker is kept; an app's is
    /// removed (only a sidecar may say a call was not processed).
    pub is_sidecar: bool,
}

/// Forwards calls to one upstream. Everything sits behind one `Arc`: hyper
/// clones the stack for every call and the balancer clones the endpoint it
/// picks, so a clone must cost one reference count, not one per part of
/// the client.
pub struct Forwarder<C, B> {
    shared: Arc<Shared<C, B>>,
}

struct Shared<C, B> {
    client: Client<C, B>,
    upstream: Upstream,
}

impl<C, B> Clone for Forwarder<C, B> {
    fn clone(&self) -> Self {
        Forwarder {
            shared: self.shared.clone(),
        }
    }
}

impl<C, B> Forwarder<C, B>
where
    C: Connect + Clone,
    B: Body + Send,
    B::Data: Send,
{
    /// A forwarder over its own HTTP/2-only connection pool, made by
    /// `connector`, with the sidecar's pool and keep-alive settings.
    pub fn new(connector: C, upstream: Upstream, settings: &Settings) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .http2_keep_alive_interval(settings.keepalive_interval)
            .build(connector);
        Forwarder {
            shared: Arc::new(Shared { client, upstream }),
        }
    }
}

/// A forwarded call's answer: the upstream's response (or `UNAVAILABLE`),
/// or at once `INTERNAL` for a request whose URI cannot be pointed at it.
pub type Forwarded<C, B> = Either<ForwardFuture<C, B>, Ready<Result<Response<ProxyBody>, Infallible>>>;

impl<C, B> Service<Request<B>> for Forwarder<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Forwarded<C, B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The pooled client is always ready; its pool bounds connections.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let upstream = &self.shared.upstream;
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(upstream.scheme.clone());
        parts.authority = Some(upstream.authority.clone());
        match Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(error) => {
                let message = format!("cannot forward to {}: {error}", upstream.label);
                return Either::Right(ready(Ok(status::response(Code::Internal, &message))));
            }
        }
        Either::Left(ForwardFuture {
            inner: self.shared.client.request(req),
            forwarder: self.shared.clone(),
        })
    }
}

/// The response of a forwarded call. A named future rather than a boxed one:
/// the client's future is already boxed, this adds no second allocation.
pub struct ForwardFuture<C, B> {
    inner: ResponseFuture,
    /// For the upstream's label and kind, read only when the call fails or
    /// the marker must be dropped.
    forwarder: Arc<Shared<C, B>>,
}

impl<C, B> Future for ForwardFuture<C, B> {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let upstream = &this.forwarder.upstream;
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(mut rsp)) => {
                if !upstream.is_sidecar {
                    rsp.headers_mut().remove(NOT_PROCESSED);
                }
                Poll::Ready(Ok(rsp.map(http_body_util::Either::Left)))
            }
            Poll::Ready(Err(error)) => {
                let reason = reason(&error);
                tracing::warn!(upstream = %upstream.label, %reason, "call failed");
                let message = format!("{} is unavailable: {reason}", upstream.label);
                let mut rsp = status::response(Code::Unavailable, &message);
                if never_sent(&error) {
                    rsp.headers_mut().insert(NOT_PROCESSED, HeaderValue::from_static("1"));
                }
                Poll::Ready(Ok(rsp))
            }
        }
    }
}

/// Whether the request provably never reached the upstream: no connection
/// could be made (TCP, TLS), the request was cancelled before it was sent,
/// the stream was refused (`REFUSED_STREAM`), or the upstream's GOAWAY did
/// not cover it (h2 fails exactly the streams above the GOAWAY's last
/// stream id with a remote GOAWAY error).
fn never_sent(error: &ClientError) -> bool {
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
fn reason(error: &ClientError) -> String {
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
