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
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::Either;
use http::{
    HeaderName, HeaderValue, Request, Response, Uri,
    uri::{Authority, Scheme},
};
use http_body::Body;
use tower::Service;

use crate::{
    body::{ProxyBody, UpstreamBody},
    connection::{BoxError, Connect, ConnectFailure, Connection},
    grpc::{Code, status},
    options::Settings,
    pipe::send_body,
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
    shared: Arc<Shared<C>>,
    _body: PhantomData<fn(B)>,
}

struct Shared<C> {
    connection: Connection<C>,
    upstream: Upstream,
}

impl<C, B> Clone for Forwarder<C, B> {
    fn clone(&self) -> Self {
        Forwarder {
            shared: self.shared.clone(),
            _body: PhantomData,
        }
    }
}

impl<C: Connect, B> Forwarder<C, B> {
    /// A forwarder whose connection `connector` makes, with the sidecar's
    /// keep-alive settings.
    pub fn new(connector: C, upstream: Upstream, settings: &Settings) -> Self {
        Forwarder {
            shared: Arc::new(Shared {
                connection: Connection::new(connector, settings),
                upstream,
            }),
            _body: PhantomData,
        }
    }
}

/// A forwarded call's answer: the upstream's response (or `UNAVAILABLE`),
/// or at once `INTERNAL` for a request whose URI cannot be pointed at it.
pub type Forwarded = Either<ForwardFuture, Ready<Result<Response<ProxyBody>, Infallible>>>;

/// One boxed future per call: it holds h2's futures, which hold the call's
/// state while the response is awaited.
pub type ForwardFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

impl<C, B> Service<Request<B>> for Forwarder<C, B>
where
    C: Connect,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
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
            let sender = match shared.connection.sender().await {
                Ok(sender) => sender,
                Err(ConnectFailure(error)) => return Ok(unavailable(&shared.upstream, &Failure::Connect(error))),
            };
            match exchange(sender.send, req).await {
                Ok(mut rsp) => {
                    if !shared.upstream.is_sidecar {
                        rsp.headers_mut().remove(NOT_PROCESSED);
                    }
                    Ok(rsp.map(http_body_util::Either::Left))
                }
                Err(failure) => {
                    if failure.breaks_connection() {
                        shared.connection.retire(sender.generation);
                    }
                    Ok(unavailable(&shared.upstream, &failure))
                }
            }
        }))
    }
}

/// Opens a stream for `req`, sends its body and awaits the response head.
async fn exchange<B>(send: h2::client::SendRequest<Bytes>, req: Request<B>) -> Result<Response<UpstreamBody>, Failure>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    // Waits while the upstream's stream limit is reached.
    let mut send = send.ready().await.map_err(Failure::Open)?;
    let (parts, body) = req.into_parts();
    let end = body.is_end_stream();
    let (response, stream) = send
        .send_request(Request::from_parts(parts, ()), end)
        .map_err(Failure::Open)?;
    let request_pipe = if end { None } else { send_body(body, stream).await };
    let rsp = response.await.map_err(Failure::Exchange)?;
    Ok(rsp.map(|recv| UpstreamBody::new(recv, request_pipe)))
}

/// Why a call could not be forwarded.
enum Failure {
    /// No connection could be made: the request was never sent.
    Connect(Arc<dyn StdError + Send + Sync>),
    /// The stream could not be opened: the request was never sent.
    Open(h2::Error),
    /// The stream failed after the request went out.
    Exchange(h2::Error),
}

impl Failure {
    /// Whether the connection itself is gone or going (closed, GOAWAY, an
    /// I/O or protocol error), rather than only the call's stream reset.
    fn breaks_connection(&self) -> bool {
        match self {
            Failure::Connect(_) => false,
            Failure::Open(error) | Failure::Exchange(error) => !error.is_reset(),
        }
    }

    /// Whether the request provably never reached the upstream.
    fn never_sent(&self) -> bool {
        match self {
            Failure::Connect(_) | Failure::Open(_) => true,
            Failure::Exchange(error) => never_sent(error),
        }
    }
}

/// `UNAVAILABLE` naming the upstream and the reason, marked
/// [`NOT_PROCESSED`] when the request provably never reached it.
fn unavailable(upstream: &Upstream, failure: &Failure) -> Response<ProxyBody> {
    let reason = match failure {
        Failure::Connect(error) => reason(&**error),
        Failure::Open(error) | Failure::Exchange(error) => reason(error),
    };
    tracing::warn!(upstream = %upstream.label, %reason, "call failed");
    let message = format!("{} is unavailable: {reason}", upstream.label);
    let mut rsp = status::response(Code::Unavailable, &message);
    if failure.never_sent() {
        rsp.headers_mut().insert(NOT_PROCESSED, HeaderValue::from_static("1"));
    }
    rsp
}

/// Whether a request whose stream was opened provably never reached the
/// upstream: the stream was refused (`REFUSED_STREAM`), or the upstream's
/// GOAWAY did not cover it (h2 fails exactly the streams above the
/// GOAWAY's last stream id with a remote GOAWAY error).
fn never_sent(error: &h2::Error) -> bool {
    let refused = error.is_reset() && error.reason() == Some(h2::Reason::REFUSED_STREAM);
    error.is_remote() && (refused || error.is_go_away())
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
