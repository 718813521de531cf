//! One HTTP/2 connection per upstream, shared by every call to it as
//! streams: made on first use, made again once it has closed or failed,
//! and pinged while open so a dead peer is found.
//!
//! The client side speaks `h2` directly rather than through hyper's client.
//! hyper's HTTP/2 client spawns one task per request to wait for the
//! response and usually a second to send the body, each as large as its
//! whole connection future (about 2.6 KiB), and its pooled client boxed a
//! further 3.6 KiB per call. A unary call through the sidecar needs none of
//! that: its request body is already in hand (see `pipe.rs`), so the call's
//! own future sends it and awaits the response.
//!
//! A call takes the ready sender under a short, uncontended lock; only the
//! first call after a close waits for the connect, which every call then
//! waiting shares (single flight).

use std::{
    error::Error as StdError,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use h2::client::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{keepalive, options::Settings};

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Makes a new connection to one upstream: TCP to an app, TCP and TLS to a
/// peer sidecar.
pub trait Connect: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Self::Io, BoxError>> + Send>>;
}

/// Why no connection could be made (TCP, TLS, or the HTTP/2 handshake);
/// shared by every call that waited for the attempt.
#[derive(Debug, Clone)]
pub struct ConnectFailure(pub Arc<dyn StdError + Send + Sync>);

/// A sender on the current connection; `generation` names the connection
/// so a call that saw it fail can retire exactly that one.
#[derive(Clone)]
pub struct Sender {
    pub send: SendRequest<Bytes>,
    pub generation: u64,
    /// Set when the connection's task has ended.
    closed: Arc<AtomicBool>,
}

type Connecting = Shared<BoxFuture<'static, Result<Sender, ConnectFailure>>>;

enum State {
    Idle,
    Connecting { generation: u64, attempt: Connecting },
    Ready(Sender),
}

/// HTTP/2 settings of our client connections: hyper's client defaults,
/// which suit a proxy (large windows, so one slow stream cannot stall a
/// fast one for long), and the sidecar's keep-alive.
#[derive(Clone, Copy)]
struct Http2 {
    keepalive_interval: Duration,
}

const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;

/// The connection to one upstream and the means to make it again.
pub struct Connection<C> {
    connector: Arc<C>,
    http2: Http2,
    /// The state, and the last generation handed out.
    state: Mutex<(State, u64)>,
}

impl<C: Connect> Connection<C> {
    pub fn new(connector: C, settings: &Settings) -> Self {
        Connection {
            connector: Arc::new(connector),
            http2: Http2 {
                keepalive_interval: settings.keepalive_interval,
            },
            state: Mutex::new((State::Idle, 0)),
        }
    }

    /// A sender on the open connection, if there is one: the fast path of
    /// every call.
    pub fn ready(&self) -> Option<Sender> {
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &guard.0 {
            State::Ready(sender) if !sender.closed.load(Ordering::Relaxed) => Some(sender.clone()),
            _ => None,
        }
    }

    /// A sender on an open connection, connecting first if there is none.
    pub async fn sender(&self) -> Result<Sender, ConnectFailure> {
        let (generation, attempt) = {
            let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let (state, last_generation) = &mut *guard;
            match state {
                State::Ready(sender) if !sender.closed.load(Ordering::Relaxed) => return Ok(sender.clone()),
                State::Connecting { generation, attempt } => (*generation, attempt.clone()),
                State::Idle | State::Ready(_) => {
                    *last_generation += 1;
                    let generation = *last_generation;
                    let attempt = connect(self.connector.clone(), self.http2, generation).shared();
                    *state = State::Connecting {
                        generation,
                        attempt: attempt.clone(),
                    };
                    (generation, attempt)
                }
            }
        };
        let outcome = attempt.await;
        // Whichever waiting call gets here first publishes the outcome.
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut guard.0;
        if matches!(state, State::Connecting { generation: g, .. } if *g == generation) {
            *state = match &outcome {
                Ok(sender) => State::Ready(sender.clone()),
                Err(_) => State::Idle,
            };
        }
        outcome
    }

    /// Retires connection `generation` after a call on it failed in a way
    /// that concerns the connection, so the next call makes a new one.
    pub fn retire(&self, generation: u64) {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(&guard.0, State::Ready(sender) if sender.generation == generation) {
            guard.0 = State::Idle;
        }
    }
}

fn connect<C: Connect>(
    connector: Arc<C>,
    http2: Http2,
    generation: u64,
) -> BoxFuture<'static, Result<Sender, ConnectFailure>> {
    async move {
        let io = connector
            .connect()
            .await
            .map_err(|error| ConnectFailure(Arc::from(error)))?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            // Two of h2's bounds on a misbehaving peer count what our own
            // cancellations (callers that reset, deadlines that pass) cause,
            // over the connection's whole life, and closed it with GOAWAY:
            // - answers for streams it has forgotten count as errors, 1,024
            //   at most (h2 issue #856);
            // - small DATA frames dropped for a cancelled stream spend the
            //   budget for small frames, and are never given back (h2
            //   0.4.20 gives it back only for frames it buffers).
            // Our peers are our own app and authenticated sidecars: neither
            // is bounded.
            .max_local_error_reset_streams(None)
            .data_frame_budget(usize::MAX)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|error| ConnectFailure(Arc::new(error)))?;
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(connection, http2, closed.clone()));
        Ok(Sender {
            send,
            generation,
            closed,
        })
    }
    .boxed()
}

/// Runs the connection until it ends or stops answering PINGs.
async fn drive<T>(mut connection: h2::client::Connection<T, Bytes>, http2: Http2, closed: Arc<AtomicBool>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let keepalive = keepalive::dead_peer(connection.ping_pong(), http2.keepalive_interval);
    tokio::select! {
        ended = &mut connection => if let Err(error) = ended {
            tracing::debug!(%error, "upstream connection ended");
        },
        reason = keepalive => tracing::warn!(%reason, "closing an upstream connection"),
    }
    closed.store(true, Ordering::Relaxed);
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Plain TCP to one address.
    pub(crate) struct Tcp(pub(crate) std::net::SocketAddr);

    impl Connect for Tcp {
        type Io = TcpStream;

        fn connect(&self) -> Pin<Box<dyn Future<Output = Result<TcpStream, BoxError>> + Send>> {
            let addr = self.0;
            Box::pin(async move { Ok(TcpStream::connect(addr).await?) })
        }
    }

    /// An HTTP/2 server that counts the connections it accepts and closes
    /// each when told to.
    async fn server() -> (
        std::net::SocketAddr,
        Arc<AtomicUsize>,
        tokio::sync::broadcast::Sender<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let (close, _) = tokio::sync::broadcast::channel::<()>(4);
        let (count, closer) = (accepted.clone(), close.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut closed = closer.subscribe();
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    tokio::select! {
                        _ = async { while connection.accept().await.is_some() {} } => {}
                        _ = closed.recv() => {}
                    }
                });
            }
        });
        (addr, accepted, close)
    }

    /// Waits (up to 5 s) until the server has accepted `n` connections.
    async fn accepted_reaches(accepted: &AtomicUsize, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while accepted.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the server accepts");
        assert_eq!(accepted.load(Ordering::SeqCst), n);
    }

    #[tokio::test]
    async fn callers_share_one_connection_and_a_closed_one_is_made_again() {
        let (addr, accepted, close) = server().await;
        let connection = Connection::new(Tcp(addr), &Settings::default());

        let (a, b) = tokio::join!(connection.sender(), connection.sender());
        let (a, b) = (a.expect("connects"), b.expect("connects"));
        assert_eq!(a.generation, b.generation, "one connect for both callers");
        accepted_reaches(&accepted, 1).await;
        assert!(connection.ready().is_some());

        // The server closes it: the next caller gets a new one.
        close.send(()).expect("a connection listens");
        tokio::time::timeout(Duration::from_secs(5), async {
            while connection.ready().is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the close is noticed");
        let c = connection.sender().await.expect("connects again");
        assert!(c.generation > a.generation);
        accepted_reaches(&accepted, 2).await;

        // A retired connection is replaced even though it is still open.
        connection.retire(c.generation);
        let d = connection.sender().await.expect("connects again");
        assert!(d.generation > c.generation);
        accepted_reaches(&accepted, 3).await;
        // Retiring an old generation leaves the current one alone.
        connection.retire(c.generation);
        assert_eq!(connection.ready().map(|s| s.generation), Some(d.generation));
    }

    #[tokio::test]
    async fn a_failed_connect_is_reported_to_every_waiting_caller_and_tried_again() {
        // A port nothing listens on: bound, then released.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let connection = Connection::new(Tcp(addr), &Settings::default());
        let (a, b) = tokio::join!(connection.sender(), connection.sender());
        for failure in [a.err(), b.err()] {
            let ConnectFailure(error) = failure.expect("refused");
            assert!(error.to_string().to_lowercase().contains("refused"), "{error}");
        }
        assert!(connection.ready().is_none());
        // Nothing is cached: once the upstream is there, the next call connects.
        let listener = TcpListener::bind(addr).await.expect("rebind the same port");
        tokio::spawn(async move {
            if let Ok((tcp, _)) = listener.accept().await {
                let _keep = h2::server::handshake(tcp).await;
                std::future::pending::<()>().await;
            }
        });
        connection.sender().await.expect("connects once the upstream listens");
    }

    /// One direction of a [`Relay`]: the bytes carried so far, and whether
    /// to keep them rather than pass them on.
    pub(crate) struct Direction {
        pub(crate) bytes: Arc<AtomicUsize>,
        pub(crate) hold: tokio::sync::watch::Sender<bool>,
    }

    /// A TCP relay between a client and a server that counts the bytes going
    /// each way and can hold either way back: what would be late frames on
    /// a real network, made to order.
    pub(crate) struct Relay {
        pub(crate) addr: std::net::SocketAddr,
        pub(crate) to_server: Direction,
        pub(crate) to_client: Direction,
    }

    /// Carries `from` to `to`, keeping what it read while `held` says so.
    async fn carry(
        mut from: impl tokio::io::AsyncRead + Unpin,
        mut to: impl tokio::io::AsyncWrite + Unpin,
        bytes: Arc<AtomicUsize>,
        mut held: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 64 * 1024];
        let mut kept = Vec::new();
        loop {
            tokio::select! {
                read = from.read(&mut buf) => {
                    let Ok(n @ 1..) = read else { return };
                    bytes.fetch_add(n, Ordering::SeqCst);
                    kept.extend_from_slice(&buf[..n]);
                }
                changed = held.changed() => if changed.is_err() { return },
            }
            if !*held.borrow() && !kept.is_empty() {
                if to.write_all(&kept).await.is_err() {
                    return;
                }
                kept.clear();
            }
        }
    }

    pub(crate) async fn relay(server: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let direction = || {
            let (hold, held) = tokio::sync::watch::channel(false);
            let bytes = Arc::new(AtomicUsize::new(0));
            (
                Direction {
                    bytes: bytes.clone(),
                    hold,
                },
                bytes,
                held,
            )
        };
        let (to_server, up, up_held) = direction();
        let (to_client, down, down_held) = direction();
        tokio::spawn(async move {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Ok(server) = TcpStream::connect(server).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                carry(client_read, server_write, up, up_held),
                carry(server_read, client_write, down, down_held),
            );
        });
        Relay {
            addr,
            to_server,
            to_client,
        }
    }

    /// Waits (up to 5 s) until `count` reaches `n`.
    pub(crate) async fn reaches(count: &AtomicUsize, n: usize, what: &str) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while count.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: {} of {n} bytes", count.load(Ordering::SeqCst)));
    }

    /// Small messages in each answer of `answering_server` in the test below.
    const MESSAGES: usize = 4;

    /// An HTTP/2 server that answers every request at once with `:status
    /// 200` and a body of `messages` DATA frames of `answer`, as a stream of
    /// small gRPC messages would (none: an empty 200).
    pub(crate) async fn answering_server(messages: usize) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((_req, mut reply))) = connection.accept().await {
                        let Ok(mut body) = reply.send_response(http::Response::new(()), messages == 0) else {
                            continue;
                        };
                        if messages > 0 {
                            for _ in 0..messages {
                                let _ = body.send_data(Bytes::from_static(b"answer"), false);
                            }
                            let _ = body.send_data(Bytes::new(), true);
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn answers_to_calls_already_cancelled_leave_the_connection_open() {
        // HEADERS (9 + 1 byte: `:status 200` indexed), the messages' DATA
        // frames (9 + 6 each) and the empty last one (9).
        const ANSWER: usize = 10 + MESSAGES * 15 + 9;
        // RST_STREAM: 9 + 4.
        const RESET: usize = 13;
        // Enough small frames arrive for cancelled streams over the rounds to
        // spend h2's default budget for them (half the connection window).
        const ROUNDS: usize = 5;
        const CALLS: usize = 1000;
        let relay = relay(answering_server(MESSAGES).await).await;
        let connection = Connection::new(Tcp(relay.addr), &Settings::default());
        let sender = connection.sender().await.expect("connects");
        let get = || http::Request::get("http://upstream/").body(()).expect("request");
        let mut send = sender.send.clone();
        for _ in 0..=ROUNDS {
            // The connection still carries calls, and every answer held
            // before has been read once this one is.
            let answer = tokio::time::timeout(Duration::from_secs(5), async {
                send = send.clone().ready().await?;
                let (answer, _) = send.send_request(get(), true)?;
                let mut body = answer.await?.into_body();
                while let Some(data) = body.data().await {
                    let _ = body.flow_control().release_capacity(data?.len());
                }
                Ok::<_, h2::Error>(())
            })
            .await
            .expect("answered in time");
            assert!(answer.is_ok(), "{answer:?}");

            // Calls whose callers give up while their answers are on the
            // way: the answers are held until every call has been cancelled.
            relay.to_client.hold.send_replace(true);
            let answered = relay.to_client.bytes.load(Ordering::SeqCst);
            let mut pending = Vec::with_capacity(CALLS);
            for _ in 0..CALLS {
                send = send.clone().ready().await.expect("ready");
                pending.push(send.send_request(get(), true).expect("send").0);
            }
            reaches(&relay.to_client.bytes, answered + CALLS * ANSWER, "answers written").await;
            let requests = relay.to_server.bytes.load(Ordering::SeqCst);
            drop(pending);
            reaches(&relay.to_server.bytes, requests + CALLS * RESET, "resets sent").await;
            relay.to_client.hold.send_replace(false);
        }
        assert_eq!(connection.ready().map(|s| s.generation), Some(sender.generation));
    }
}
