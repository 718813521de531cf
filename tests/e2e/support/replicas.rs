//! An in-process mesh with one replicated service for the resilience tests
//! (balancing.rs, retries.rs): service "echo" with several replicas, each a
//! real sidecar (mTLS inbound, its own ports: replica k's are replica 0's
//! plus k × the port step) in front of a small scriptable echo app, and the
//! outbound sidecar of client "caller". mesh.toml is a real file, so tests
//! can edit it while the sidecars run.
//!
//! The app ([`ReplicaApp`]) serves `EchoService/Unary` and the health check
//! by hand over h2c, so a test can script what it does: count calls, be
//! slow, fail the next calls with `UNAVAILABLE` in the headers or in the
//! trailers, record the `grpc-timeout` and body size it saw, and be killed
//! and restarted.

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ::http::{HeaderValue, Request, Response};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use meshwork_config::MeshConfig;
use meshwork_proto::echo::{EchoRequest, EchoResponse, echo_service_client::EchoServiceClient};
use meshwork_proxy::{Listeners, ProxyError, Settings, SidecarOptions};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_prost::prost::Message;

use super::{
    certs::{TRUST_DOMAIN, TestCerts},
    http,
    mesh::{channel, test_settings},
};

/// Ports between one replica's and the next's.
const STEP: u16 = 10;
/// The most replicas a test mesh can grow to.
pub const MAX_REPLICAS: u16 = 4;

/// How the next call (to whichever replica gets it) fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// A trailers-only `UNAVAILABLE`.
    InHeaders,
    /// Headers, no message, then `UNAVAILABLE` in the trailers.
    InTrailers,
}

/// What every replica app shares: failures to hand out, in order.
#[derive(Default)]
pub struct Script {
    fail: Mutex<VecDeque<Fail>>,
}

impl Script {
    pub fn fail_next(&self, fail: Fail) {
        self.fail.lock().expect("script").push_back(fail);
    }

    fn next(&self) -> Option<Fail> {
        self.fail.lock().expect("script").pop_front()
    }
}

/// One replica's app.
pub struct ReplicaApp {
    pub index: u16,
    pub addr: SocketAddr,
    /// Echo calls handled (health checks not counted).
    pub calls: AtomicU64,
    /// Each call waits this long first.
    pub delay_ms: AtomicU64,
    /// The `grpc-timeout` and request body size of each call, in order.
    pub seen: Mutex<Vec<(Option<String>, usize)>>,
    script: Arc<Script>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ReplicaApp {
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Kills the app: the port closes and open connections drop.
    pub fn kill(&self) {
        if let Some(task) = self.task.lock().expect("task").take() {
            task.abort();
        }
    }

    /// Kills the app and waits until its port refuses connections: an abort
    /// takes effect on the task's next poll, on whichever thread runs it.
    pub async fn kill_and_wait(&self) {
        self.kill();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "app at {} still accepts",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Serves again on the same address.
    pub async fn restart(self: &Arc<Self>) {
        let listener = bind_retrying(self.addr).await;
        self.serve(listener);
    }

    fn serve(self: &Arc<Self>, listener: TcpListener) {
        let app = self.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: killing the accept loop drops them.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                // As a real gRPC server does: with Nagle on, a response written
                // while the last is unacknowledged waits up to 40 ms for the
                // peer's delayed ACK, which the balancer reads as a slow replica.
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = tower::service_fn(move |req: Request<Incoming>| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.answer(req).await) }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        if let Some(old) = self.task.lock().expect("task").replace(task) {
            old.abort();
        }
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<AppBody> {
        if req.uri().path() == "/grpc.health.v1.Health/Check" {
            // HealthCheckResponse { status: SERVING }.
            return grpc_response(&[0x08, 0x01], "0", None);
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let request = EchoRequest::decode(body.get(5..).unwrap_or_default()).unwrap_or_default();
        self.seen
            .lock()
            .expect("seen")
            .push((timeout.clone(), request.payload.len()));
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let mut rsp = match self.script.next() {
            Some(Fail::InHeaders) => trailers_only("14", "replica says: unavailable"),
            Some(Fail::InTrailers) => grpc_response(&[], "14", Some("replica says: unavailable (trailers)")),
            None => {
                let message = EchoResponse {
                    message: format!("replica-{}", self.index),
                    index: u32::from(self.index),
                    payload: Vec::new(),
                };
                grpc_response(&message.encode_to_vec(), "0", None)
            }
        };
        if let Some(timeout) = timeout.and_then(|t| HeaderValue::from_str(&t).ok()) {
            rsp.headers_mut().insert("x-seen-grpc-timeout", timeout);
        }
        rsp
    }
}

type AppBody = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// Headers, one message (when `message` is non-empty), then trailers.
fn grpc_response(message: &[u8], status: &str, text: Option<&str>) -> Response<AppBody> {
    let mut frames = Vec::new();
    if !message.is_empty() {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        framed.extend_from_slice(message);
        frames.push(Ok(Frame::data(Bytes::from(framed))));
    }
    let mut trailers = ::http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_str(status).expect("status"));
    if let Some(text) = text {
        trailers.insert("grpc-message", HeaderValue::from_str(text).expect("message"));
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let mut rsp = Response::new(StreamBody::new(futures::stream::iter(frames)));
    rsp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    rsp
}

fn trailers_only(status: &str, text: &str) -> Response<AppBody> {
    let mut rsp = Response::new(StreamBody::new(futures::stream::iter(Vec::new())));
    let headers = rsp.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_str(status).expect("status"));
    headers.insert("grpc-message", HeaderValue::from_str(text).expect("message"));
    rsp
}

async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind {addr} again");
}

/// A replica's four addresses, by index.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub app: SocketAddr,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

struct Sidecar {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ProxyError>>,
}

impl Sidecar {
    async fn stop(mut self) {
        drop(self.stop.take());
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("sidecar stops within its grace period")
            .expect("sidecar task");
        result.expect("sidecar ran cleanly");
    }
}

fn start_sidecar(opts: SidecarOptions, listeners: Listeners) -> Sidecar {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(meshwork_proxy::run_with_listeners(opts, listeners, async move {
        let _ = stopped.await;
    }));
    Sidecar { stop: Some(stop), task }
}

/// What a test puts in mesh.toml besides the addresses.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Lines inside `[services.echo]` (e.g. `timeout = "300ms"`).
    pub service_keys: String,
    /// Whole tables (e.g. `[services.echo.methods.Unary]`, `[retry]`).
    pub tables: String,
}

impl Policy {
    pub fn tables(tables: &str) -> Self {
        Policy {
            service_keys: String::new(),
            tables: tables.to_string(),
        }
    }
}

/// `[services.echo.methods.Unary] idempotent = true`: the echo contract
/// sets no idempotency, so tests mark it in mesh.toml.
pub const UNARY_IDEMPOTENT: &str = "[services.echo.methods.Unary]\nidempotent = true\n";

pub struct ReplicaMesh {
    pub certs: TestCerts,
    pub file: PathBuf,
    pub base: u16,
    pub script: Arc<Script>,
    pub apps: Vec<Arc<ReplicaApp>>,
    pub caller_outbound: SocketAddr,
    pub caller_admin: SocketAddr,
    /// When the caller's sidecar started (its retry budget's clock).
    pub started: tokio::time::Instant,
    policy: Policy,
    replicas: Vec<Option<Sidecar>>,
    caller: Option<Sidecar>,
}

impl ReplicaMesh {
    /// `running` replicas in mesh.toml, each with its app and sidecar running.
    pub async fn start(running: u16, policy: Policy) -> ReplicaMesh {
        Self::start_with(running, running, policy).await
    }

    /// `listed` replicas in mesh.toml, `running` of them started (more than
    /// listed: a replica that the file adds later is already up).
    pub async fn start_with(listed: u16, running: u16, policy: Policy) -> ReplicaMesh {
        assert!(running <= MAX_REPLICAS && listed <= MAX_REPLICAS);
        let certs = TestCerts::new(&["echo", "caller"]);
        let (base, mut bound) = bind_replica_ports(running).await;
        let [caller_out, caller_adm] = bind_outside_block(base).await;
        let caller_outbound = caller_out.local_addr().expect("addr");
        let caller_admin = caller_adm.local_addr().expect("addr");
        let file = certs.state_dir().join("mesh.toml");
        let script = Arc::new(Script::default());
        let mut mesh = ReplicaMesh {
            certs,
            file,
            base,
            script,
            apps: Vec::new(),
            caller_outbound,
            caller_admin,
            started: tokio::time::Instant::now(),
            policy,
            replicas: Vec::new(),
            caller: None,
        };
        mesh.write_config(listed);
        // Replica sidecars read a file listing every replica that runs,
        // so that one the caller's file does not list yet can start.
        let full = Arc::new(MeshConfig::parse(&mesh.config_text(MAX_REPLICAS), &mesh.file).expect("mesh.toml"));
        for (index, [app, inbound, outbound, admin]) in bound.drain(..).enumerate() {
            let index = u16::try_from(index).expect("few");
            let replica = Arc::new(ReplicaApp {
                index,
                addr: app.local_addr().expect("addr"),
                calls: AtomicU64::new(0),
                delay_ms: AtomicU64::new(0),
                seen: Mutex::new(Vec::new()),
                script: mesh.script.clone(),
                task: Mutex::new(None),
            });
            replica.serve(app);
            mesh.apps.push(replica);
            let mut opts = SidecarOptions::replica(full.clone(), "echo", index);
            opts.settings = settings();
            let listeners = Listeners {
                inbound: Some(inbound),
                outbound,
                admin,
            };
            mesh.replicas.push(Some(start_sidecar(opts, listeners)));
        }
        let config = Arc::new(MeshConfig::load(&mesh.file).expect("mesh.toml"));
        let mut opts = SidecarOptions::new(config, "caller");
        opts.settings = settings();
        mesh.started = tokio::time::Instant::now();
        mesh.caller = Some(start_sidecar(
            opts,
            Listeners {
                inbound: None,
                outbound: caller_out,
                admin: caller_adm,
            },
        ));
        http::wait_ready(caller_admin).await;
        for index in 0..running {
            http::wait_ready(mesh.ports(index).admin).await;
        }
        mesh
    }

    pub fn ports(&self, index: u16) -> Ports {
        ports(self.base, index)
    }

    fn config_text(&self, replicas: u16) -> String {
        let p = self.ports(0);
        format!(
            r#"
trust_domain = "{TRUST_DOMAIN}"
state_dir = '{state}'
leaf_lifetime = "1h"
replica_port_step = {STEP}

[clients.caller]
outbound = "{caller_out}"
admin = "{caller_adm}"

[services.echo]
app = "{app}"
inbound = "{inbound}"
outbound = "{outbound}"
admin = "{admin}"
grpc_services = ["meshwork.echo.v1.EchoService"]
replicas = {replicas}
{keys}

{tables}
"#,
            state = self.certs.state_dir().display(),
            caller_out = self.caller_outbound,
            caller_adm = self.caller_admin,
            app = p.app,
            inbound = p.inbound,
            outbound = p.outbound,
            admin = p.admin,
            keys = self.policy.service_keys,
            tables = self.policy.tables,
        )
    }

    /// Changes what mesh.toml says besides the addresses (written by the
    /// next [`write_config`](Self::write_config)).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Rewrites mesh.toml listing `replicas` replicas.
    pub fn write_config(&self, replicas: u16) {
        self.write_text(&self.config_text(replicas));
    }

    /// Rewrites mesh.toml with any text (a broken one, say).
    pub fn write_text(&self, text: &str) {
        // Write then rename: the watcher never sees half a file.
        let partial = self.file.with_extension("toml.partial");
        std::fs::write(&partial, text).expect("write mesh.toml");
        std::fs::rename(&partial, &self.file).expect("rename mesh.toml");
    }

    pub async fn client(&self) -> EchoServiceClient<Channel> {
        EchoServiceClient::new(channel(self.caller_outbound).await)
    }

    /// Stops replica `index`'s sidecar (its ports close).
    pub async fn stop_sidecar(&mut self, index: u16) {
        if let Some(sidecar) = self.replicas[usize::from(index)].take() {
            sidecar.stop().await;
        }
    }

    /// A counter or gauge from the caller sidecar's `/metrics`, by its
    /// exact series (`name{labels}`); 0 when absent.
    pub async fn caller_metric(&self, series: &str) -> f64 {
        let (_, body) = http::get(self.caller_admin, "/metrics").await.expect("metrics");
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn total_calls(&self) -> u64 {
        self.apps.iter().map(|a| a.calls()).sum()
    }

    pub fn counts(&self) -> Vec<u64> {
        self.apps.iter().map(|a| a.calls()).collect()
    }

    pub async fn shutdown(mut self) {
        for app in &self.apps {
            app.kill();
        }
        if let Some(caller) = self.caller.take() {
            caller.stop().await;
        }
        for sidecar in self.replicas.drain(..).flatten() {
            sidecar.stop().await;
        }
    }
}

fn ports(base: u16, index: u16) -> Ports {
    let at = |offset: u16| SocketAddr::from(([127, 0, 0, 1], base + index * STEP + offset));
    Ports {
        app: at(0),
        inbound: at(1),
        outbound: at(2),
        admin: at(3),
    }
}

/// Two listeners on ports outside the replicas' block from `base`: the
/// replicas not started yet must find their ports free, and the mesh.toml
/// that lists them all must not see one port twice. Ports that fall inside
/// are held until the search ends, so they are not handed out again.
async fn bind_outside_block(base: u16) -> [TcpListener; 2] {
    let block = u32::from(base)..u32::from(base) + u32::from(MAX_REPLICAS * STEP) + 4;
    let (mut found, mut inside) = (Vec::new(), Vec::new());
    while found.len() < 2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if block.contains(&u32::from(port)) {
            inside.push(listener);
        } else {
            found.push(listener);
        }
    }
    let [a, b]: [TcpListener; 2] = found.try_into().expect("two");
    [a, b]
}

/// Finds a base port where the first `running` replicas' four ports can all
/// be bound, and binds them.
async fn bind_replica_ports(running: u16) -> (u16, Vec<[TcpListener; 4]>) {
    'search: for _ in 0..100 {
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = probe.local_addr().expect("addr").port();
        drop(probe);
        if u32::from(base) + u32::from(MAX_REPLICAS * STEP) > 65_000 {
            continue;
        }
        let mut bound = Vec::new();
        for index in 0..running {
            let p = ports(base, index);
            let mut four = Vec::new();
            for addr in [p.app, p.inbound, p.outbound, p.admin] {
                match TcpListener::bind(addr).await {
                    Ok(listener) => four.push(listener),
                    Err(_) => continue 'search,
                }
            }
            let [a, b, c, d]: [TcpListener; 4] = four.try_into().expect("four");
            bound.push([a, b, c, d]);
        }
        return (base, bound);
    }
    panic!("no free run of ports for the replicas");
}

fn settings() -> Settings {
    Settings {
        config_poll_interval: Duration::from_millis(100),
        ..test_settings()
    }
}

/// A unary echo request with `payload_len` bytes of payload.
pub fn echo(payload_len: usize) -> EchoRequest {
    EchoRequest {
        message: "hi".into(),
        repeat: 0,
        payload: vec![7; payload_len],
    }
}

/// A unary echo call from a raw HTTP/2 client which, unlike tonic, does not
/// time the call out itself on `grpc-timeout`: the status it returns
/// (`grpc-status`, `grpc-message`) is the sidecar's.
pub async fn raw_unary(addr: SocketAddr, grpc_timeout: &str) -> (String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let message = echo(8).encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    framed.extend_from_slice(&message);
    let req = Request::post(format!("http://{addr}/meshwork.echo.v1.EchoService/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .body(http_body_util::Full::new(Bytes::from(framed)))
        .expect("request");
    let rsp = sender.send_request(req).await.expect("response");
    let (parts, body) = rsp.into_parts();
    let trailers = body.collect().await.ok().and_then(|b| b.trailers().cloned());
    let field = |name: &str| {
        parts
            .headers
            .get(name)
            .or_else(|| trailers.as_ref().and_then(|t| t.get(name)))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    (field("grpc-status"), field("grpc-message"))
}
