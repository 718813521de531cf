//! Serving one accepted HTTP/2 connection (the app's on the outbound
//! listener, a peer sidecar's on the inbound) with `h2` directly: each
//! stream becomes a call into the sidecar's stack, whose response is sent
//! back as the stream's send window allows.
//!
//! Not hyper's server, for the same reason the client side is not hyper's
//! (see `connection.rs`): hyper spawns a task per request, sized like its
//! whole stream future, and stamps a `Date` header on every response. Here,
//! on the sidecar's single-threaded runtime, a connection's calls run
//! inside the connection's own task: the streams it accepts are polled
//! together with the connection, so no task is spawned per call and the
//! frames several calls produce leave in one write. On a multi-threaded
//! runtime each call is spawned instead, so one busy connection can use
//! every thread.
//!
//! A caller that resets its stream cancels the call: the stack's future
//! (and with it the upstream's stream) is dropped, or never started when
//! the reset came before the call was first run.

use std::{
    convert::Infallible,
    future::{Future, poll_fn},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use h2::server::SendResponse;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    runtime::{Handle, RuntimeFlavor},
};
use tower::{Service, ServiceExt, util::Oneshot};

use crate::{body::RecvBody, connection::BoxError, keepalive, options::Settings, pipe::Pipe, shutdown::Shutdown};

/// hyper's server defaults, which the sidecar served with until it spoke
/// h2 itself: windows of 1 MiB, 400 KiB of queued sends per stream, and
/// request headers up to 16 KiB.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams the peer made us reset (malformed requests) before the
/// connection is closed: a bound on abuse.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Why a connection ended other than by closing cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("no HTTP/2 connection preface within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(h2::Error),
    #[error(transparent)]
    Http2(h2::Error),
    #[error("{0}")]
    DeadPeer(String),
}

/// What a connection's calls go to: the sidecar's stack, cloned per call,
/// whose futures may move to another thread.
pub trait Stack<B>:
    Service<Request<RecvBody>, Response = Response<B>, Error = Infallible, Future: Send + 'static> + Clone + Send + 'static
{
}

impl<S, B> Stack<B> for S where
    S: Service<Request<RecvBody>, Response = Response<B>, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// The body of the stack's responses.
pub trait ResponseBody: Body<Data = Bytes, Error: Into<BoxError>> + Unpin + Send + 'static {}

impl<B> ResponseBody for B where B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin + Send + 'static {}

/// The sidecar's HTTP/2 server settings, built once per listener.
#[derive(Clone)]
pub struct Http2Server {
    builder: h2::server::Builder,
    handshake_timeout: Duration,
    keepalive_interval: Duration,
}

impl Http2Server {
    pub fn new(settings: &Settings) -> Self {
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            // Streams the caller resets before we take them (h2's rapid-reset
            // bound) may number as many as it may have open, not h2's 20: a
            // caller whose deadlines pass as it sends, or our outbound passing
            // its app's cancellations on, resets bursts of streams in one
            // read, and h2 answered them with GOAWAY, failing every call on
            // the connection. `poll_serve` takes the reset streams on every
            // turn, so they cannot pile up beyond one read.
            .max_pending_accept_reset_streams(settings.max_concurrent_streams as usize)
            // Streams we reset are remembered (for 1 s) up to as many as may
            // be open, not h2's 50: what their callers sent meanwhile is then
            // dropped quietly, not counted among the errors above. And such
            // small frames would spend h2's budget for small DATA frames for
            // good (h2 0.4.20 gives it back only for frames it buffers), so
            // the connection would close in the end: our peers are our app
            // and authenticated sidecars, and it is not bounded.
            .max_concurrent_reset_streams(settings.max_concurrent_streams as usize)
            .data_frame_budget(usize::MAX)
            .max_concurrent_streams(settings.max_concurrent_streams);
        Http2Server {
            builder,
            handshake_timeout: settings.handshake_timeout,
            keepalive_interval: settings.keepalive_interval,
        }
    }

    /// Serves `io` until the peer closes it, it fails, or it stops
    /// answering PINGs. On shutdown it says GOAWAY and serves the calls
    /// already begun until they end.
    pub async fn serve<IO, S, B>(&self, io: IO, service: S, mut shutdown: Shutdown) -> Result<(), ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
        S: Stack<B>,
        B: ResponseBody,
    {
        let handshake = tokio::time::timeout(self.handshake_timeout, self.builder.handshake::<_, Bytes>(io));
        let mut connection = match handshake.await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(ConnectionError::Handshake(error)),
            Err(_) => return Err(ConnectionError::HandshakeTimeout(self.handshake_timeout)),
        };
        let keepalive = keepalive::dead_peer(connection.ping_pong(), self.keepalive_interval);
        let drain = shutdown.requested();
        tokio::pin!(keepalive, drain);
        let mut serving = Serving {
            connection,
            service,
            calls: FuturesUnordered::new(),
            spawn_calls: Handle::current().runtime_flavor() != RuntimeFlavor::CurrentThread,
        };
        let mut draining = false;
        loop {
            tokio::select! {
                ended = poll_fn(|cx| serving.poll_serve(cx)) => return ended.map_err(ConnectionError::Http2),
                () = &mut drain, if !draining => {
                    draining = true;
                    serving.connection.graceful_shutdown();
                }
                reason = &mut keepalive => return Err(ConnectionError::DeadPeer(reason)),
            }
        }
    }
}

/// A connection and the calls on it that run in its task.
struct Serving<IO, S, B>
where
    S: Service<Request<RecvBody>>,
{
    connection: h2::server::Connection<IO, Bytes>,
    service: S,
    calls: FuturesUnordered<Call<Oneshot<S, Request<RecvBody>>, B>>,
    spawn_calls: bool,
}

impl<IO, S, B> Serving<IO, S, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Stack<B>,
    B: ResponseBody,
{
    /// Moves the connection and its calls on; ready when the connection has
    /// closed (the calls still running in it are then dropped: their
    /// caller is gone).
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        loop {
            // Reads and writes the connection, and takes the new streams.
            loop {
                match self.connection.poll_accept(cx) {
                    Poll::Ready(Some(Ok((req, reply)))) => self.start(req, reply),
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => break,
                }
            }
            // Runs every call that can move on. Calls that ended may have
            // queued frames: then go round once more, so they leave
            // together in one write rather than one write per call.
            let mut ended = false;
            while let Poll::Ready(Some(())) = self.calls.poll_next_unpin(cx) {
                ended = true;
            }
            if !ended {
                return Poll::Pending;
            }
        }
    }

    fn start(&mut self, req: Request<h2::RecvStream>, reply: SendResponse<Bytes>) {
        let call = Call::Waiting {
            response: self.service.clone().oneshot(req.map(RecvBody::new)),
            reply,
        };
        if self.spawn_calls {
            tokio::spawn(call);
        } else {
            self.calls.push(call);
        }
    }
}

pin_project! {
    /// One call: waiting for the stack's response, then sending its body.
    #[project = CallProj]
    enum Call<F, B> {
        Waiting { #[pin] response: F, reply: SendResponse<Bytes> },
        Sending { pipe: Pipe<B> },
    }
}

impl<F, B> Future for Call<F, B>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let pipe = match self.as_mut().project() {
            CallProj::Sending { pipe } => return Pin::new(pipe).poll(cx),
            CallProj::Waiting { response, reply } => {
                // Asked before the stack is: a stream the caller reset
                // before we took it (its deadline passed as it sent) is
                // never forwarded, so the reset goes no further.
                if let Poll::Ready(reason) = reply.poll_reset(cx) {
                    tracing::debug!(reason = ?reason.ok(), "caller reset the stream; cancelling the call");
                    return Poll::Ready(());
                }
                let rsp = match response.poll(cx) {
                    Poll::Ready(Ok(rsp)) => rsp,
                    Poll::Ready(Err(never)) => match never {},
                    Poll::Pending => return Poll::Pending,
                };
                let (head, body) = rsp.into_parts();
                let end = body.is_end_stream();
                let grpc = is_grpc(&head.headers);
                match reply.send_response(Response::from_parts(head, ()), end) {
                    Ok(_) if end => return Poll::Ready(()),
                    Ok(stream) => Pipe::response(body, stream, grpc),
                    Err(error) => {
                        // The stream is gone, or h2 refused the head (a
                        // header HTTP/2 forbids): the caller must not wait.
                        tracing::debug!(%error, "could not send a response head");
                        reply.send_reset(h2::Reason::INTERNAL_ERROR);
                        return Poll::Ready(());
                    }
                }
            }
        };
        self.set(Call::Sending { pipe });
        self.poll(cx)
    }
}

/// Whether a response is gRPC over HTTP/2 (`application/grpc`, with or
/// without a `+codec`), whose trailers carry its status. gRPC-Web is not:
/// its trailers travel in the body.
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
}

#[cfg(test)]
mod tests {
    use std::{
        net::SocketAddr,
        sync::{Arc, atomic::Ordering},
    };

    use http_body::Frame;
    use http_body_util::{BodyExt, Full};
    use tokio::{
        net::{TcpListener, TcpStream},
        sync::{Notify, oneshot},
        task::JoinHandle,
    };

    use super::*;
    use crate::shutdown::{self, Trigger};

    /// Serves one connection on a fresh port with `service`; the handle
    /// yields how `serve` ended.
    async fn serve_one<B: ResponseBody>(
        service: impl Stack<B>,
    ) -> (SocketAddr, Trigger, JoinHandle<Result<(), ConnectionError>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (trigger, shutdown) = shutdown::channel();
        let server = Http2Server::new(&Settings::default());
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            server.serve(tcp, service, shutdown).await
        });
        (addr, trigger, served)
    }

    async fn client(addr: SocketAddr, stream_window: u32) -> h2::client::SendRequest<Bytes> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(stream_window)
            .handshake::<_, Bytes>(tcp)
            .await
            .expect("handshake");
        tokio::spawn(connection);
        send
    }

    fn post(path: &str) -> Request<()> {
        Request::post(format!("http://test{path}")).body(()).expect("request")
    }

    /// Answers with the request's body repeated `times` times (the path
    /// says how many), and a trailer.
    async fn repeat(req: Request<RecvBody>) -> Result<Response<Full<Bytes>>, Infallible> {
        let times: usize = req.uri().path().trim_start_matches('/').parse().unwrap_or(1);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(Response::new(Full::new(body.repeat(times).into())))
    }

    async fn round_trip(send: &mut h2::client::SendRequest<Bytes>, times: usize, message: &'static [u8]) -> Bytes {
        let (response, mut body) = send.send_request(post(&format!("/{times}")), false).expect("send");
        body.send_data(Bytes::from_static(message), true).expect("send body");
        let response = response.await.expect("response");
        assert_eq!(response.status(), 200);
        let mut recv = response.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.expect("chunk");
            let _ = recv.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        Bytes::from(got)
    }

    async fn serves_calls_concurrently_and_flow_controls_large_responses() {
        let (addr, _trigger, _served) = serve_one(tower::service_fn(repeat)).await;
        // A small window: the 4 MiB responses must wait for the client to
        // read, many times over.
        let send = client(addr, 16 * 1024).await;
        let calls = (0..8).map(|_| {
            let mut send = send.clone();
            async move { round_trip(&mut send, 4 * 1024 * 1024 / 8, b"abcdefgh").await }
        });
        for body in futures::future::join_all(calls).await {
            assert_eq!(body.len(), 4 * 1024 * 1024);
            assert!(body.chunks(8).all(|c| c == b"abcdefgh"));
        }
    }

    #[tokio::test]
    async fn serves_calls_in_the_connections_task() {
        serves_calls_concurrently_and_flow_controls_large_responses().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_calls_as_tasks_of_their_own_on_many_threads() {
        serves_calls_concurrently_and_flow_controls_large_responses().await;
    }

    /// A call that says when it has started, answers only when told, and
    /// says when it was dropped.
    #[derive(Clone)]
    struct Held {
        started: Arc<Notify>,
        answer: Arc<Notify>,
        dropped: Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>,
    }

    impl Service<Request<RecvBody>> for Held {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<RecvBody>) -> Self::Future {
            self.started.notify_one();
            let answer = self.answer.clone();
            let on_drop = self.dropped.lock().expect("lock").take();
            Box::pin(async move {
                let _on_drop = on_drop;
                answer.notified().await;
                Ok(Response::new(Full::new(Bytes::from_static(b"done"))))
            })
        }
    }

    fn held() -> (Held, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let held = Held {
            started: Arc::new(Notify::new()),
            answer: Arc::new(Notify::new()),
            dropped: Arc::new(std::sync::Mutex::new(Some(tx))),
        };
        (held, rx)
    }

    #[tokio::test]
    async fn a_caller_that_resets_its_stream_cancels_the_call() {
        let (service, dropped) = held();
        let started = service.started.clone();
        let (addr, _trigger, _served) = serve_one(service).await;
        let mut send = client(addr, 65_535).await;
        let (_response, mut body) = send.send_request(post("/"), false).expect("send");
        body.send_data(Bytes::from_static(b"x"), true).expect("send body");
        started.notified().await;
        body.send_reset(h2::Reason::CANCEL);
        // The call's future holds the sender; its receiver hears the drop.
        let heard = tokio::time::timeout(Duration::from_secs(5), dropped)
            .await
            .expect("the call is dropped once its caller resets the stream");
        assert!(heard.is_err(), "nothing is ever sent, only dropped");
    }

    #[tokio::test]
    async fn callers_cancelling_calls_in_bursts_keep_their_connection() {
        let (addr, _trigger, served) = serve_one(tower::service_fn(repeat)).await;
        let mut send = client(addr, 65_535).await;
        // Calls given up on as soon as they are sent (a caller whose
        // deadline has passed): each stream's HEADERS and RST_STREAM reach
        // the server together, before it has taken the stream. Far more than
        // h2's default bound on such streams (20) arrive in one burst.
        for _ in 0..200 {
            let (_response, mut body) = send.send_request(post("/1"), false).expect("send");
            body.send_reset(h2::Reason::CANCEL);
        }
        // The connection still carries calls.
        let body = tokio::time::timeout(Duration::from_secs(5), round_trip(&mut send, 2, b"ok"))
            .await
            .expect("answered");
        assert_eq!(body, Bytes::from_static(b"okok"));
        assert!(!served.is_finished(), "the connection was closed: {served:?}");
    }

    #[tokio::test]
    async fn a_call_reset_before_it_runs_never_reaches_the_stack() {
        let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = paths.clone();
        let service = tower::service_fn(move |req: Request<RecvBody>| {
            seen.lock().expect("lock").push(req.uri().path().to_owned());
            repeat(req)
        });
        let (addr, _trigger, _served) = serve_one(service).await;
        let mut send = client(addr, 65_535).await;
        // Queued together, so they leave in one write and are read at once:
        // the first stream is reset before the server has taken it.
        let (_response, mut body) = send.send_request(post("/3"), false).expect("send");
        body.send_reset(h2::Reason::CANCEL);
        let body = round_trip(&mut send, 1, b"ok").await;
        assert_eq!(body, Bytes::from_static(b"ok"));
        assert_eq!(*paths.lock().expect("lock"), ["/1"]);
    }

    #[tokio::test]
    async fn callers_still_sending_to_calls_answered_early_keep_their_connection() {
        use crate::connection::tests::{reaches, relay};
        // Answers at once, without reading the request: h2 then resets the
        // request's side (NO_ERROR), and what the caller sent meanwhile
        // arrives for a stream we have reset.
        let answer = tower::service_fn(|_req: Request<RecvBody>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"no"))))
        });
        let (addr, _trigger, served) = serve_one(answer).await;
        let relay = relay(addr).await;
        let mut send = client(relay.addr, 65_535).await;
        let call = |send: &mut h2::client::SendRequest<Bytes>| send.send_request(post("/"), false).expect("send");
        let (response, _body) = call(&mut send);
        response.await.expect("answered");

        // As many calls as may be open at once, each answered while its
        // caller still sends small messages, as a client stream would.
        const CALLS: usize = 1000;
        const MESSAGES: usize = 4;
        // HEADERS (9 + 1 byte: `:status 200` indexed) and DATA (9 + 2) at
        // least; each message's DATA frame 9 + 1.
        const ANSWER: usize = 21;
        const MESSAGE: usize = 10;
        relay.to_client.hold.send_replace(true);
        let answered = relay.to_client.bytes.load(Ordering::SeqCst);
        let mut calls: Vec<_> = (0..CALLS).map(|_| call(&mut send)).collect();
        reaches(&relay.to_client.bytes, answered + CALLS * ANSWER, "answers written").await;
        let sent = relay.to_server.bytes.load(Ordering::SeqCst);
        for (_, body) in &mut calls {
            for _ in 0..MESSAGES {
                body.send_data(Bytes::from_static(b"m"), false).expect("send a message");
            }
        }
        reaches(
            &relay.to_server.bytes,
            sent + CALLS * MESSAGES * MESSAGE,
            "messages sent",
        )
        .await;
        relay.to_client.hold.send_replace(false);
        for (response, _) in calls {
            let _ = response.await;
        }

        let (response, _body) = call(&mut send);
        let answer = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("answered in time");
        assert!(answer.is_ok(), "the connection was closed: {answer:?}");
        assert!(!served.is_finished(), "{served:?}");
    }

    #[tokio::test]
    async fn shutdown_says_goaway_and_lets_calls_in_flight_finish() {
        let (service, _dropped) = held();
        let (started, answer) = (service.started.clone(), service.answer.clone());
        let (addr, trigger, served) = serve_one(service).await;
        let mut send = client(addr, 65_535).await;
        let (response, mut body) = send.send_request(post("/"), false).expect("send");
        body.send_data(Bytes::from_static(b"x"), true).expect("send body");
        started.notified().await;

        trigger.trigger();
        // The client hears the GOAWAY: it may open no more streams...
        tokio::time::timeout(Duration::from_secs(5), async {
            while send.clone().ready().await.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("GOAWAY in time");
        // ...while the call in flight is still answered...
        answer.notify_one();
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("answered")
            .expect("response");
        let got = response.into_body().data().await.expect("data").expect("chunk");
        assert_eq!(got, Bytes::from_static(b"done"));
        // ...and then the connection closes cleanly.
        let ended = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the connection closes after its last call")
            .expect("no panic");
        assert!(ended.is_ok(), "{ended:?}");
    }

    #[tokio::test]
    async fn a_peer_that_never_speaks_http2_is_dropped_after_the_handshake_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let settings = Settings {
            handshake_timeout: Duration::from_millis(100),
            ..Settings::default()
        };
        let server = Http2Server::new(&settings);
        let (_trigger, shutdown) = shutdown::channel();
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            server.serve(tcp, tower::service_fn(repeat), shutdown).await
        });
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let ended = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("gives up")
            .expect("no panic");
        assert!(matches!(ended, Err(ConnectionError::HandshakeTimeout(_))), "{ended:?}");
    }

    /// A response whose body sends one chunk and then fails the way a lost
    /// upstream connection does: an I/O error, no reset reason.
    async fn broken_off(content_type: &'static str) -> Result<Response<BrokenOff>, Infallible> {
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01x"))),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection lost").into()),
        ];
        let mut rsp = Response::new(http_body_util::StreamBody::new(futures::stream::iter(chunks)));
        rsp.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        Ok(rsp)
    }

    type BrokenOff =
        http_body_util::StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    /// Calls a server whose responses break off, and returns what the
    /// caller saw: trailers after the chunk, or the stream's error (which
    /// may come before h2 hands over the head, as all of it is sent at once).
    async fn call_broken_off(content_type: &'static str) -> Result<Option<http::HeaderMap>, h2::Error> {
        let (addr, _trigger, _served) = serve_one(tower::service_fn(move |_| broken_off(content_type))).await;
        let mut send = client(addr, 65_535).await;
        let (response, _) = send.send_request(post("/pkg.Service/Method"), true).expect("send");
        let mut body = response.await?.into_body();
        let mut received = Vec::new();
        while let Some(chunk) = body.data().await {
            received.extend_from_slice(&chunk?);
        }
        assert_eq!(&received[..], b"\0\0\0\0\x01x");
        body.trailers().await
    }

    #[tokio::test]
    async fn a_grpc_response_that_breaks_off_ends_as_unavailable() {
        let trailers = call_broken_off("application/grpc")
            .await
            .expect("trailers, not a reset")
            .expect("trailers");
        assert_eq!(trailers["grpc-status"], "14");
        let message = trailers["grpc-message"].to_str().expect("ascii");
        assert!(
            message.contains("broke off") && message.contains("connection lost"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn any_other_response_that_breaks_off_is_reset() {
        let error = call_broken_off("application/grpc-web")
            .await
            .expect_err("a reset, not trailers");
        assert_eq!(error.reason(), Some(h2::Reason::INTERNAL_ERROR));
    }

    #[test]
    fn grpc_responses_are_told_by_their_content_type() {
        let with = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(value));
            is_grpc(&headers)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/json"));
        assert!(!is_grpc(&http::HeaderMap::new()));
    }
}
