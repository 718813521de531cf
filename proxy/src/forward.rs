//! Sending a call on over the upstream's HTTP/2 connection (see
//! `connection.rs`), shared by the inbound (to the app) and outbound (to a
//! peer sidecar) sides: the request's URI is pointed at the upstream, its
//! body is sent (see `pipe.rs`), the response streams back untouched, and a
//! failure becomes `UNAVAILABLE` naming the upstream and the reason.
//!
//! When the failure proves the request never reached the upstream (no
//! connection could be made, the stream was refused, or a GOAWAY did not
//! cover it), the `UNAVAILABLE` carries the header [`NOT_PROCESSED`]. The
//! inbound sidecar's answer thus tells the caller's outbound sidecar that
//! the app never saw the call, so even a non-idempotent call may be retried.
//! The marker is only believed from a sidecar: an app's response has it
//! removed on the way out of the inbound sidecar.
//!
//! Until an upstream has first been reached, a call that cannot connect to
//! it is logged at debug level, and one info line says the sidecar waits for
//! it: at start-up apps and peers come up in any order, and a warning for
//! each call then (warm-ups included) only alarms a new user.

use std::{
    convert::Infallible,
    error::Error as StdError,
    future::{Future, Ready, ready},
    marker::PhantomData,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::Either;
use h2::client::ResponseFuture;
use http::{
    HeaderName, HeaderValue, Request, Response, Uri,
    uri::{Authority, Scheme},
};
use http_body::Body;
use tokio::sync::oneshot;
use tower::Service;

use crate::{
    body::{ProxyBody, RecvBody},
    connection::{BoxError, Connect, ConnectFailure, Connection, Sender},
    grpc::{Code, status},
    options::Settings,
    pipe::send_body,
};

/// Response header on a sidecar's `UNAVAILABLE`: the call never reached
/// the app (or the peer), so sending it again cannot do anything twice.
pub const NOT_PROCESSED: HeaderName = HeaderName::from_static("meshwork-not-processed");

/// Response extension: the call waited for a new connection to be made
/// (TCP, TLS, HTTP/2), so its latency says more about the set-up than
/// about how fast the upstream answers. The balancer does not measure it.
/// Only such calls carry it (no allocation on the usual path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitedForConnect;

/// Where a forwarder sends its calls.
pub struct Upstream {
    /// `http` to an app, `https` to a peer sidecar (the connector does TLS).
    pub scheme: Scheme,
    /// `:authority` of forwarded calls.
    pub authority: Authority,
    /// How messages name it: `catalog (127.0.0.1:7202)`.
    pub label: Box<str>,
    /// A peer sidecar, whose [`NOT_PROCESSED`] marker is kept; an app's is
    /// removed (only a sidecar may say a call was not processed).
    pub is_sidecar: bool,
}

/// Forwards calls to one upstream over one shared HTTP/2 connection.
/// Everything sits behind one `Arc`: the server clones the stack for every call
/// and the balancer clones the endpoint it picks, so a clone must cost one
/// reference count, not one per part.
pub struct Forwarder<C, B> {
    shared: Arc<Shared<C>>,
    _body: PhantomData<fn(B)>,
}

struct Shared<C> {
    connection: Connection<C>,
    upstream: Upstream,
    /// Whether a connection to the upstream was ever made: until then a
    /// failure to connect is start-up, not news.
    reached: AtomicBool,
    /// Whether the info line saying the sidecar waits for it was logged.
    waiting_logged: AtomicBool,
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
                reached: AtomicBool::new(false),
                waiting_logged: AtomicBool::new(false),
            }),
            _body: PhantomData,
        }
    }
}

/// A forwarded call's answer: the upstream's response (or `UNAVAILABLE`),
/// or at once `INTERNAL` for a request whose URI cannot be pointed at it.
pub type Forwarded<C, B> = Either<ForwardFuture<C, B>, Ready<Result<Response<ProxyBody>, Infallible>>>;

impl<C, B> Service<Request<B>> for Forwarder<C, B>
where
    C: Connect,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Forwarded<C, B>;

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
        let step = match self.shared.connection.ready() {
            Some(sender) => Step::Opening { req, sender },
            None => {
                let shared = self.shared.clone();
                Step::Connecting {
                    req,
                    connect: Box::pin(async move { shared.connection.sender().await }),
                }
            }
        };
        Either::Left(ForwardFuture {
            shared: self.shared.clone(),
            waited_for_connect: matches!(step, Step::Connecting { .. }),
            step,
        })
    }
}

/// One forwarded call, written out as a state machine rather than an
/// async block: it is not boxed, and while it waits for the response it
/// holds only h2's handle on the stream (the request has gone out), not
/// the space of every earlier step.
pub struct ForwardFuture<C, B> {
    shared: Arc<Shared<C>>,
    step: Step<B>,
    waited_for_connect: bool,
}

enum Step<B> {
    /// No open connection: making one (boxed, as this is rare).
    Connecting {
        req: Request<B>,
        connect: Pin<Box<dyn Future<Output = Result<Sender, ConnectFailure>> + Send>>,
    },
    /// Opening the stream, which waits while the upstream's limit on
    /// concurrent streams is reached.
    Opening {
        req: Request<B>,
        sender: Sender,
    },
    /// The request is out; waiting for the response head.
    Waiting {
        response: ResponseFuture,
        request_pipe: Option<oneshot::Sender<()>>,
        generation: u64,
    },
    Done,
}

impl<C, B> Future for ForwardFuture<C, B>
where
    C: Connect,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            this.step = match std::mem::replace(&mut this.step, Step::Done) {
                Step::Connecting { req, mut connect } => match connect.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.step = Step::Connecting { req, connect };
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(sender)) => {
                        // Only on a new connection: not a per-call cost.
                        this.shared.reached.store(true, Relaxed);
                        Step::Opening { req, sender }
                    }
                    Poll::Ready(Err(ConnectFailure(error))) => return this.fail(Failure::Connect(error), None),
                },
                Step::Opening { req, mut sender } => match sender.send.poll_ready(cx) {
                    Poll::Pending => {
                        this.step = Step::Opening { req, sender };
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(error)) => return this.fail(Failure::Open(error), Some(sender.generation)),
                    Poll::Ready(Ok(())) => {
                        let (parts, body) = req.into_parts();
                        let end = body.is_end_stream();
                        match sender.send.send_request(Request::from_parts(parts, ()), end) {
                            Err(error) => return this.fail(Failure::Open(error), Some(sender.generation)),
                            Ok((response, stream)) => Step::Waiting {
                                response,
                                request_pipe: if end { None } else { send_body(body, stream, cx) },
                                generation: sender.generation,
                            },
                        }
                    }
                },
                Step::Waiting {
                    mut response,
                    request_pipe,
                    generation,
                } => match Pin::new(&mut response).poll(cx) {
                    Poll::Pending => {
                        this.step = Step::Waiting {
                            response,
                            request_pipe,
                            generation,
                        };
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(error)) => return this.fail(Failure::Exchange(error), Some(generation)),
                    Poll::Ready(Ok(rsp)) => {
                        let mut rsp =
                            rsp.map(|recv| http_body_util::Either::Left(RecvBody::response(recv, request_pipe)));
                        if !this.shared.upstream.is_sidecar {
                            rsp.headers_mut().remove(NOT_PROCESSED);
                        }
                        if this.waited_for_connect {
                            rsp.extensions_mut().insert(WaitedForConnect);
                        }
                        return Poll::Ready(Ok(rsp));
                    }
                },
                // Polled after completion, which the Future contract leaves
                // open: never complete twice.
                Step::Done => return Poll::Pending,
            };
        }
    }
}

impl<C: Connect, B> ForwardFuture<C, B> {
    /// Ends the call with the failure's status, retiring the connection
    /// when the failure concerns it.
    fn fail(&self, failure: Failure, generation: Option<u64>) -> Poll<Result<Response<ProxyBody>, Infallible>> {
        if let Some(generation) = generation
            && failure.breaks_connection()
        {
            self.shared.connection.retire(generation);
        }
        Poll::Ready(Ok(answer_failure(&self.shared, &failure)))
    }
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
            Failure::Open(error) | Failure::Exchange(error) => error.is_go_away() || error.is_io(),
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
/// [`NOT_PROCESSED`] when the request provably never reached it; or
/// `INTERNAL` for a request that cannot be sent at all.
fn answer_failure<C>(shared: &Shared<C>, failure: &Failure) -> Response<ProxyBody> {
    let upstream = &shared.upstream;
    if let Failure::Open(error) = failure
        && is_user_error(error)
    {
        // The request itself cannot go out on HTTP/2 (h2 refused its
        // headers): sending it again would fail the same way.
        let message = format!("cannot forward to {}: {error}", upstream.label);
        return status::response(Code::Internal, &message);
    }
    let reason = match failure {
        Failure::Connect(error) => reason(&**error),
        Failure::Open(error) | Failure::Exchange(error) => reason(error),
    };
    if matches!(failure, Failure::Connect(_)) && !shared.reached.load(Relaxed) {
        if !shared.waiting_logged.swap(true, Relaxed) {
            tracing::info!(upstream = %upstream.label, "waiting for it to listen; calls to it fail until then");
        }
        tracing::debug!(upstream = %upstream.label, %reason, "call failed before the upstream first listened");
    } else {
        tracing::warn!(upstream = %upstream.label, %reason, "call failed");
    }
    let message = format!("{} is unavailable: {reason}", upstream.label);
    let mut rsp = status::response(Code::Unavailable, &message);
    if failure.never_sent() {
        rsp.headers_mut().insert(NOT_PROCESSED, HeaderValue::from_static("1"));
    }
    rsp
}

/// An error of ours rather than of the connection or the stream (h2 gives
/// only these no reason code, I/O errors aside), e.g. malformed headers.
fn is_user_error(error: &h2::Error) -> bool {
    error.reason().is_none() && !error.is_io()
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

#[cfg(test)]
mod tests {
    use http_body_util::Empty;

    use super::*;
    use crate::connection::tests::{Tcp, answering_server};

    #[tokio::test]
    async fn only_a_call_that_waited_for_the_connection_is_marked() {
        let addr = answering_server(0).await;
        let upstream = Upstream {
            scheme: Scheme::HTTP,
            authority: Authority::from_static("upstream"),
            label: "upstream".into(),
            is_sidecar: false,
        };
        let mut forwarder = Forwarder::new(Tcp(addr), upstream, &Settings::default());
        let call = |forwarder: &mut Forwarder<Tcp, Empty<Bytes>>| {
            let mut req = Request::new(Empty::new());
            *req.uri_mut() = Uri::from_static("/echo.Echo/Unary");
            forwarder.call(req)
        };
        let Ok(first) = call(&mut forwarder).await;
        assert_eq!(first.status(), http::StatusCode::OK);
        assert!(first.extensions().get::<WaitedForConnect>().is_some());
        let Ok(second) = call(&mut forwarder).await;
        assert_eq!(second.status(), http::StatusCode::OK);
        assert!(second.extensions().get::<WaitedForConnect>().is_none());
    }
}
