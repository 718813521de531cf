//! An in-process mesh for sidecar tests, all on 127.0.0.1 ports the OS
//! picked: the echo app behind the "echo" service's sidecar, and the
//! outbound sidecars of two clients, "caller" (allowed everything on echo)
//! and "stranger" (allowed only ServerStream). Two more services exist only
//! in the configuration: "catalog", whose inbound address is served by an
//! impostor presenting the valid mesh certificate of workload "evil", and
//! "down", whose inbound address refuses connections. Service "idle" has a
//! running sidecar but no app.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use meshwork_config::MeshConfig;
use meshwork_proto::echo::echo_service_client::EchoServiceClient;
use meshwork_proxy::{Listeners, ProxyError, Settings, SidecarOptions};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

use super::{
    certs::{TRUST_DOMAIN, TestCerts},
    echo::EchoApp,
    http,
};

pub struct Mesh {
    pub certs: TestCerts,
    pub echo: EchoApp,
    pub echo_inbound: SocketAddr,
    pub echo_admin: SocketAddr,
    pub caller_outbound: SocketAddr,
    pub caller_admin: SocketAddr,
    pub stranger_outbound: SocketAddr,
    pub catalog_inbound: SocketAddr,
    pub down_inbound: SocketAddr,
    pub idle_app: SocketAddr,
    pub idle_admin: SocketAddr,
    sidecars: Vec<Sidecar>,
}

struct Sidecar {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ProxyError>>,
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0")
}

/// `n` distinct ports nothing listens on: all are bound before any is
/// released, so the kernel cannot hand the same one out twice.
async fn free_ports<const N: usize>() -> [SocketAddr; N] {
    let mut held = Vec::with_capacity(N);
    for _ in 0..N {
        held.push(listener().await);
    }
    std::array::from_fn(|i| held[i].local_addr().expect("addr"))
}

/// Settings that make tests quick: fast reloads, probes and drains.
pub fn test_settings() -> Settings {
    Settings {
        connect_timeout: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(2),
        drain_grace: Duration::from_secs(2),
        reload_interval: Duration::from_millis(100),
        probe_interval: Duration::from_millis(100),
        ..Settings::default()
    }
}

impl Mesh {
    pub async fn start() -> Mesh {
        let certs = TestCerts::new(&["echo", "catalog", "down", "idle", "caller", "stranger", "evil"]);
        let echo = EchoApp::start(listener().await);

        let (echo_in, echo_out, echo_adm) = (listener().await, listener().await, listener().await);
        let (caller_out, caller_adm) = (listener().await, listener().await);
        let (stranger_out, stranger_adm) = (listener().await, listener().await);
        let (idle_in, idle_out, idle_adm) = (listener().await, listener().await, listener().await);
        let impostor = listener().await;
        // Last: once released, the kernel may hand these ports to the next
        // bind, and a listener bound after this could take one of them.
        let [idle_app, down_inbound, unused @ ..] = free_ports::<8>().await;
        let addr = |l: &TcpListener| l.local_addr().expect("addr");
        let (echo_inbound, echo_admin) = (addr(&echo_in), addr(&echo_adm));
        let caller_outbound = addr(&caller_out);
        let stranger_outbound = addr(&stranger_out);
        let catalog_inbound = addr(&impostor);
        let idle_admin = addr(&idle_adm);

        let text = format!(
            r#"
trust_domain = "{TRUST_DOMAIN}"
state_dir = '{state}'
leaf_lifetime = "1h"

[services.echo]
app = "{app}"
inbound = "{echo_inbound}"
outbound = "{echo_outbound}"
admin = "{echo_admin}"
grpc_services = ["meshwork.echo.v1.EchoService"]
allow = [
    {{ from = "caller" }},
    {{ from = "stranger", methods = ["ServerStream"] }},
]

[services.catalog]
app = "{u0}"
inbound = "{catalog_inbound}"
outbound = "{u1}"
admin = "{u2}"
grpc_services = ["shop.catalog.v1.CatalogService"]

[services.down]
app = "{u3}"
inbound = "{down_inbound}"
outbound = "{u4}"
admin = "{u5}"
grpc_services = ["shop.users.v1.UserService"]

[services.idle]
app = "{idle_app}"
inbound = "{idle_inbound}"
outbound = "{idle_outbound}"
admin = "{idle_admin}"
grpc_services = ["shop.payments.v1.PaymentService"]

[clients.caller]
outbound = "{caller_outbound}"
admin = "{caller_admin}"

[clients.stranger]
outbound = "{stranger_outbound}"
admin = "{stranger_admin}"
"#,
            state = certs.state_dir().display(),
            app = echo.addr,
            echo_outbound = addr(&echo_out),
            caller_admin = addr(&caller_adm),
            stranger_admin = addr(&stranger_adm),
            u0 = unused[0],
            u1 = unused[1],
            u2 = unused[2],
            u3 = unused[3],
            u4 = unused[4],
            u5 = unused[5],
            idle_inbound = addr(&idle_in),
            idle_outbound = addr(&idle_out),
        );
        let source = certs.state_dir().join("mesh.toml");
        let config = Arc::new(MeshConfig::parse(&text, &source).expect("test mesh.toml"));

        spawn_impostor(impostor, &certs);
        let caller_admin = addr(&caller_adm);
        let admins = [echo_admin, caller_admin, addr(&stranger_adm)];
        let sidecars = vec![
            start_sidecar(&config, "echo", Some(echo_in), echo_out, echo_adm),
            start_sidecar(&config, "caller", None, caller_out, caller_adm),
            start_sidecar(&config, "stranger", None, stranger_out, stranger_adm),
            // Never ready (no app): not waited for.
            start_sidecar(&config, "idle", Some(idle_in), idle_out, idle_adm),
        ];
        for admin in admins {
            http::wait_ready(admin).await;
        }
        Mesh {
            certs,
            echo,
            echo_inbound,
            echo_admin,
            caller_outbound,
            caller_admin,
            stranger_outbound,
            catalog_inbound,
            down_inbound,
            idle_app,
            idle_admin,
            sidecars,
        }
    }

    /// A gRPC channel to the caller's outbound sidecar, as an app would have.
    pub async fn caller_channel(&self) -> Channel {
        channel(self.caller_outbound).await
    }

    pub async fn caller_echo(&self) -> EchoServiceClient<Channel> {
        EchoServiceClient::new(self.caller_channel().await)
    }

    pub async fn stranger_echo(&self) -> EchoServiceClient<Channel> {
        EchoServiceClient::new(channel(self.stranger_outbound).await)
    }

    /// Stops every sidecar and waits for each to drain and return.
    pub async fn shutdown(mut self) {
        for sidecar in &mut self.sidecars {
            drop(sidecar.stop.take());
        }
        for sidecar in self.sidecars.drain(..) {
            let result = tokio::time::timeout(Duration::from_secs(10), sidecar.task)
                .await
                .expect("sidecar stops within its grace period")
                .expect("sidecar task");
            result.expect("sidecar ran cleanly");
        }
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect to outbound sidecar")
}

fn start_sidecar(
    config: &Arc<MeshConfig>,
    name: &str,
    inbound: Option<TcpListener>,
    outbound: TcpListener,
    admin: TcpListener,
) -> Sidecar {
    let mut opts = SidecarOptions::new(config.clone(), name);
    opts.settings = test_settings();
    let listeners = Listeners {
        inbound,
        outbound,
        admin,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(meshwork_proxy::run_with_listeners(opts, listeners, async move {
        let _ = stopped.await;
    }));
    Sidecar { stop: Some(stop), task }
}

/// Serves TLS with workload "evil"'s valid mesh certificate on `listener`.
fn spawn_impostor(listener: TcpListener, certs: &TestCerts) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let leaf = certs.leaf_on_disk("evil");
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
}
