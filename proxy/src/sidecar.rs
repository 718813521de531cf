//! Starting and stopping a sidecar: load the identity, build the stacks,
//! bind (or take) the listeners, serve until shutdown, then drain.

use std::{future::Future, net::SocketAddr, sync::Arc};

use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch};

use meshwork_contracts::Mesh;

use crate::{
    admin::{self, Readiness},
    error::{ProxyError, io_reason},
    identity::Identity,
    inbound::{self, InboundStack},
    options::SidecarOptions,
    outbound,
    shutdown::{self, Shutdown},
    telemetry::{Direction, Telemetry},
};

/// The sidecar's listening sockets. `inbound` is only for services (a client
/// sidecar has no app to protect).
#[derive(Debug)]
pub struct Listeners {
    pub inbound: Option<TcpListener>,
    pub outbound: TcpListener,
    pub admin: TcpListener,
}

/// Binds the sidecar's listeners at the addresses in the configuration.
pub async fn bind(opts: &SidecarOptions) -> Result<Listeners, ProxyError> {
    let spec = opts
        .config
        .sidecar_replica(&opts.name, opts.replica)
        .ok_or_else(|| unknown(opts))?;
    let bind_one = |listener: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|error| ProxyError::Bind {
            sidecar: opts.name.clone(),
            listener,
            addr,
            reason: io_reason(&error),
        })
    };
    let inbound = match spec.inbound {
        Some(addr) => Some(bind_one("inbound", addr).await?),
        None => None,
    };
    Ok(Listeners {
        inbound,
        outbound: bind_one("outbound", spec.outbound).await?,
        admin: bind_one("admin", spec.admin).await?,
    })
}

/// Runs the sidecar on the configured addresses until `shutdown` resolves,
/// then drains in-flight calls (bounded by `settings.drain_grace`).
pub async fn run(opts: SidecarOptions, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
    // Load the identity first: a sidecar without certificates should fail
    // before it takes its ports.
    load_identity(&opts)?;
    let listeners = bind(&opts).await?;
    run_with_listeners(opts, listeners, shutdown).await
}

/// Like [`run`], on listeners the caller bound (tests bind port 0 first).
pub async fn run_with_listeners(
    opts: SidecarOptions,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let name = opts.name.as_str();
    let spec = opts
        .config
        .sidecar_replica(name, opts.replica)
        .ok_or_else(|| unknown(&opts))?;
    let settings = &opts.settings;
    let identity = load_identity(&opts)?;
    let identity_error = |cause| ProxyError::Identity {
        sidecar: name.to_string(),
        cause,
    };
    // mesh.toml and the contracts it names, checked together: a method
    // name the contracts do not have is refused here, before serving.
    let mesh = Arc::new(Mesh::new(opts.config.clone()).map_err(ProxyError::Contracts)?);
    // One registry for the whole sidecar: each component registers its own
    // metric families while the stacks are built, then /metrics serves it.
    let mut registry = Registry::default();
    let telemetry = Telemetry::new(name, &mesh, &mut registry);
    let (trigger, stop) = shutdown::channel();
    let mut tasks = tokio::task::JoinSet::new();
    // mesh.toml and its contracts are followed while running: replicas,
    // policy, contracts and allow rules reach both sides through this watch.
    let (mesh_updates, updates) = watch::channel(mesh.clone());
    let outbound_stack = outbound::build(&mesh, updates.clone(), &identity, settings, &mut registry, &telemetry)
        .map_err(identity_error)?;
    {
        let (outbound, mut stop) = (spec.outbound, stop.clone());
        let interval = settings.config_poll_interval;
        tasks.spawn(async move {
            let reflect = |service: &str| reflection_channel(outbound, service);
            meshwork_contracts::follow(mesh_updates, interval, reflect, stop.requested()).await;
        });
    }
    tasks.spawn(identity.reload(settings.reload_interval, stop.clone()));

    let readiness = match (spec.service, spec.app) {
        (Some(service), Some(app)) => {
            // This replica's own app (the service's `app` is replica 0's).
            let service = &meshwork_config::Service { app, ..service.clone() };
            let readiness = Readiness::new(Err(format!("{name} app at {app} not probed yet")));
            tasks.spawn(admin::probe(
                readiness.clone(),
                name.to_string(),
                app,
                settings.probe_interval,
                stop.clone(),
            ));
            let listener = listeners.inbound.ok_or_else(|| ProxyError::MissingListener {
                sidecar: name.to_string(),
                listener: "inbound",
            })?;
            let stack = InboundStack::new(name, service, settings, &telemetry);
            // The allow rules follow mesh.toml on connections already open.
            let (policy, service) = (stack.policy().clone(), name.to_string());
            tasks.spawn(on_each_snapshot(updates.clone(), stop.clone(), move |mesh| {
                if let Some(config) = mesh.config.services.get(&service) {
                    policy.update(config.clone());
                }
            }));
            let (sidecar, identity, settings, stop) =
                (name.to_string(), identity.clone(), settings.clone(), stop.clone());
            tasks.spawn(async move { inbound::run(&sidecar, listener, &identity, stack, &settings, stop).await });
            readiness
        }
        _ => Readiness::new(Ok(())),
    };
    {
        let (sidecar, settings, stop) = (name.to_string(), settings.clone(), stop.clone());
        let listener = listeners.outbound;
        let open = telemetry.open_connections(Direction::Outbound);
        tasks.spawn(async move { outbound::run(&sidecar, listener, outbound_stack, open, &settings, stop).await });
    }
    {
        let (sidecar, settings, stop, readiness) =
            (name.to_string(), settings.clone(), stop.clone(), readiness.clone());
        let listener = listeners.admin;
        let registry = std::sync::Arc::new(registry);
        tasks.spawn(async move { admin::run(&sidecar, listener, readiness, registry, &settings, stop).await });
    }
    // Method names in metrics and spans follow the contracts.
    let names = telemetry.clone();
    tasks.spawn(on_each_snapshot(updates, stop.clone(), move |mesh| names.update(mesh)));
    tracing::info!(sidecar = name, "sidecar running");

    shutdown.await;
    tracing::info!(sidecar = name, "shutting down: draining in-flight calls");
    readiness.set(Err("shutting down".into()));
    trigger.trigger();
    while let Some(result) = tasks.join_next().await {
        if let Err(error) = result {
            tracing::error!(sidecar = name, %error, "a sidecar task failed");
        }
    }
    Ok(())
}

/// Calls `apply` with each snapshot of mesh.toml and its contracts the
/// watch publishes after this starts, until shutdown.
async fn on_each_snapshot(mut updates: watch::Receiver<Arc<Mesh>>, mut stop: Shutdown, apply: impl Fn(&Mesh)) {
    loop {
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { return },
            _ = stop.requested() => return,
        }
        let mesh = updates.borrow_and_update().clone();
        apply(&mesh);
    }
}

/// A channel for asking mesh service `service`'s reflection: through this
/// sidecar's own outbound listener, which routes it by `:authority` to the
/// service's replicas over mTLS, as any call.
fn reflection_channel(outbound: SocketAddr, service: &str) -> Option<tonic::transport::Channel> {
    let origin = format!("http://{service}").parse().ok()?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{outbound}")).ok()?;
    Some(endpoint.origin(origin).timeout(REFLECTION_TIMEOUT).connect_lazy())
}

/// How long one reflection exchange may take.
const REFLECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn unknown(opts: &SidecarOptions) -> ProxyError {
    ProxyError::UnknownWorkload {
        name: opts.name.clone(),
        config: opts.config.source.clone(),
    }
}

fn load_identity(opts: &SidecarOptions) -> Result<Identity, ProxyError> {
    let config = &opts.config;
    Identity::load(
        &config.trust_domain,
        &config.spiffe_id(&opts.name),
        &opts.ca_cert,
        &opts.cert,
        &opts.key,
    )
    .map_err(|cause| ProxyError::Identity {
        sidecar: opts.name.clone(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meshwork_config::MeshConfig;

    use super::*;

    fn config(outbound: SocketAddr) -> Arc<MeshConfig> {
        let text = format!(
            r#"
            trust_domain = "t.local"
            [services.cart]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:0"
            outbound = "{outbound}"
            admin = "127.0.0.1:3"
            grpc_services = ["shop.cart.v1.CartService"]
            "#
        );
        Arc::new(MeshConfig::parse(&text, std::path::Path::new("/m/mesh.toml")).expect("config"))
    }

    #[tokio::test]
    async fn bind_names_the_listener_in_use() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let opts = SidecarOptions::new(config(addr), "cart");
        let error = bind(&opts).await.expect_err("port in use");
        assert_eq!(
            error.to_string(),
            format!("cart sidecar: cannot bind outbound {addr}: address in use")
        );
    }

    #[test]
    fn unknown_workload_is_refused() {
        let error = SidecarOptions::from_config(config("127.0.0.1:2".parse().expect("addr")), "nobody", 0)
            .expect_err("unknown");
        assert_eq!(error.to_string(), "/m/mesh.toml: no service or client named 'nobody'");
        let error =
            SidecarOptions::from_config(config("127.0.0.1:2".parse().expect("addr")), "cart", 1).expect_err("replica");
        assert_eq!(
            error.to_string(),
            "/m/mesh.toml: service 'cart' has no replica 1 (it has 1)"
        );
        let opts = SidecarOptions::from_config(config("127.0.0.1:2".parse().expect("addr")), "cart", 0).expect("known");
        assert_eq!(opts.replica, 0);
    }

    #[test]
    fn certificates_come_from_the_state_dir() {
        let opts = SidecarOptions::new(config("127.0.0.1:2".parse().expect("addr")), "cart");
        assert_eq!(opts.cert, std::path::Path::new("/m/.mesh/certs/cart.pem"));
        assert_eq!(opts.key, std::path::Path::new("/m/.mesh/certs/cart-key.pem"));
        assert_eq!(opts.ca_cert, std::path::Path::new("/m/.mesh/certs/ca.pem"));
    }
}
