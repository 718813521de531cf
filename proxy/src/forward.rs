//! Sending a call on over the upstream's HTTP/2 connection (see
//! `connection.rs`), shared by the inbound (to the app) and outbound (to a
//! peer sidecar) sides: the request's URI is
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
use hyper::rt::{Read, Write};
use tower::Service;

use crate::{
    body::ProxyBody,
    connection::{ConnectFailure, Connection},
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
    /// `:authority` of forwarded calls; with the scheme, what the
    /// connector is asked to connect to.
    pub authority: Authority,
    /// How messages name it: `catalog (127.0.0.1:7202)`.
    pub label: Box<str>,
    /// A peer sidecar, whose [`NOT_PROCESSED`] marker is kept; an app's is
    /// removed (only a sidecar may say a call was not processed).
    pub is_sidecar: bool,
}

/// Forwards calls to one upstream over one shared HTTP/2 connection.
/// Everything sits behind one `Arc`: hyper clones the stack for every call
/// and the balancer clones the endpoint it picks, so a clone must cost one
/// reference count, not one per part.
pub struct Forwarder<C, B> {
    shared: Arc<Shared<C, B>>,
}

struct Shared<C, B> {
    connection: Connection<C, B>,
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
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<Box<dyn StdError + Send + Sync>>,
    C::Future: Send,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// A forwarder whose connection `connector` makes, with the sidecar's
    /// keep-alive settings.
    pub fn new(connector: C, upstream: Upstream, settings: &Settings) -> Self {
        let target = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        Forwarder {
            shared: Arc::new(Shared {
                connection: Connection::new(connector, target, settings),
                upstream,
            }),
        }
    }
}

/// A forwarded call's answer: the upstream's response (or `UNAVAILABLE`),
/// or at once `INTERNAL` for a request whose URI cannot be pointed at it.
pub type Forwarded = Either<ForwardFuture, Ready<Result<Response<ProxyBody>, Infallible>>>;

/// One boxed future per call: hyper's send future cannot be named.
pub type ForwardFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

impl<C, B> Service<Request<B>> for Forwarder<C, B>
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<Box<dyn StdError + Send + Sync>>,
    C::Future: Send,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Forwarded;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Calls share one connection as streams; HTTP/2 flow control and
        // the peer's stream limit bound them.
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
        let shared = self.shared.clone();
        Either::Left(Box::pin(async move {
            let failure = match shared.connection.sender().await {
                Err(ConnectFailure(error)) => Failure::Connect(error),
                Ok(mut sender) => match sender.send.send_request(req).await {
                    Ok(mut rsp) => {
                        if !shared.upstream.is_sidecar {
                            rsp.headers_mut().remove(NOT_PROCESSED);
                        }
                        return Ok(rsp.map(http_body_util::Either::Left));
                    }
                    Err(error) => {
                        if breaks_connection(&error) {
                            shared.connection.retire(sender.generation);
                        }
                        Failure::Send(error)
                    }
                },
            };
            Ok(unavailable(&shared.upstream, &failure))
        }))
    }
}

/// Why a call could not be forwarded.
enum Failure {
    /// No connection could be made: the request was never sent.
    Connect(Arc<dyn StdError + Send + Sync>),
    Send(hyper::Error),
}

/// `UNAVAILABLE` naming the upstream and the reason, marked
/// [`NOT_PROCESSED`] when the request provably never reached it.
fn unavailable(upstream: &Upstream, failure: &Failure) -> Response<ProxyBody> {
    let (reason, not_sent) = match failure {
        Failure::Connect(error) => (reason(&**error), true),
        Failure::Send(error) => (reason(error), never_sent(error)),
    };
    tracing::warn!(upstream = %upstream.label, %reason, "call failed");
    let message = format!("{} is unavailable: {reason}", upstream.label);
    let mut rsp = status::response(Code::Unavailable, &message);
    if not_sent {
        rsp.headers_mut().insert(NOT_PROCESSED, HeaderValue::from_static("1"));
    }
    rsp
}

/// Whether a failed send says the connection itself is gone or going
/// (closed, GOAWAY, an I/O or protocol error), rather than only the call's
/// own stream being reset.
fn breaks_connection(error: &hyper::Error) -> bool {
    if error.is_canceled() || error.is_closed() {
        return true;
    }
    match h2_error(error) {
        Some(h2) => !h2.is_reset(),
        None => false,
    }
}

fn h2_error(error: &hyper::Error) -> Option<&h2::Error> {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        source = e.source();
    }
    None
}

/// Whether a request that was handed to the connection provably never
/// reached the upstream: it was cancelled before it was sent (the
/// connection closed first), the stream was refused (`REFUSED_STREAM`), or
/// the upstream's GOAWAY did not cover it (h2 fails exactly the streams
/// above the GOAWAY's last stream id with a remote GOAWAY error).
fn never_sent(error: &hyper::Error) -> bool {
    if error.is_canceled() {
        return true;
    }
    h2_error(error).is_some_and(|h2| {
        let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        h2.is_remote() && (refused || h2.is_go_away())
    })
}

/// The most useful words for why a call failed: a connector's own error
/// (which already says what happened, e.g. an identity mismatch), else a
/// short name for common socket errors, else the innermost error's text.
fn reason(error: &(dyn StdError + 'static)) -> String {
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
