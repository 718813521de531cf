//! The Meshwork gateway: the mesh's edge. One port speaks REST/JSON
//! (transcoded from each method's `google.api.http` rule in the contract
//! registry), gRPC-Web and gRPC, over HTTP/1.1 and HTTP/2. It verifies the
//! end user's token, sends the verified user into the mesh, and reaches the
//! services through its own sidecar's outbound port (mTLS, deadlines, safe
//! retries, balancing and tracing all happen there).
//!
//! A request's way: `server` (limits, TLS, CORS) → `edge` (span, which
//! front end) → `rest` | `grpc` (route, `caller` checks who calls, build the
//! call) → `upstream` (the end user and trace context, into the sidecar).
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod access_log;
mod admin;
pub mod auth;
mod cache;
mod caller;
pub mod catalog;
mod edge;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod limit;
pub mod mcp;
mod metrics;
mod oauth;
pub mod rest;
mod server;
mod status;
mod storefront;
mod upstream;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use meshwork_contracts::Mesh;
use tokio::{net::TcpListener, sync::watch};

pub use error::GatewayError;

use crate::{access_log::AccessLog, catalog::Catalog, edge::Shared, metrics::Metrics};

/// How often mesh.toml and the contract files are looked at for changes.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the gateway of the mesh in `config` until `stop` resolves.
pub async fn run(config: &Path, stop: impl std::future::Future<Output = ()>) -> Result<(), GatewayError> {
    run_replica(config, 0, stop).await
}

/// Runs replica `replica` of the gateway (`[gateway] replicas`): its ports
/// are moved by `replica × replica_port_step`.
pub async fn run_replica(
    config: &Path,
    replica: u16,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), GatewayError> {
    let mesh = Mesh::load(config)?;
    let file = mesh.config.source.clone();
    let mut gateway = mesh
        .config
        .gateway
        .clone()
        .ok_or_else(|| GatewayError::NoGateway { file: file.clone() })?;
    if replica > 0 {
        let moved = gateway
            .replica(replica, mesh.config.replica_port_step)
            .filter(|_| replica < gateway.replicas);
        let Some((listen, admin)) = moved else {
            return Err(GatewayError::Policy {
                file,
                reason: format!("gateway.replicas: there is no replica {replica}"),
            });
        };
        (gateway.listen, gateway.admin) = (listen, admin);
    }
    let catalog = Catalog::build(&mesh).map_err(|source| GatewayError::Catalog {
        file: file.clone(),
        source,
    })?;
    mcp::tools::check_keys(&mesh, &gateway.mcp).map_err(|reason| GatewayError::Mcp {
        file: file.clone(),
        reason,
    })?;
    tracing::info!(
        methods = catalog.methods().count(),
        routes = catalog.routes().len(),
        "gateway: contracts read"
    );
    let tls = match &gateway.tls {
        Some(tls) => Some(server::tls_acceptor(&tls.cert, &tls.key)?),
        None => None,
    };
    let bind = |addr, what| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|cause| GatewayError::Bind { addr, what, cause })
    };
    let public = bind(gateway.listen, "the gateway's public port").await?;
    let admin = bind(gateway.admin, "the gateway's admin port").await?;

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let rate_limits = limit::RateLimits::build(&gateway, limit::LimitMetrics::register(&mut registry))
        .map(Arc::new)
        .map_err(|source| GatewayError::Policy {
            file: file.clone(),
            reason: source.to_string(),
        })?;
    rate_limits.start_housekeeping();
    let cache = cache::ResponseCache::build(&gateway, cache::CacheMetrics::register(&mut registry));
    let channel = upstream::channel(gateway.sidecar.outbound);
    let shared = Arc::new(Shared {
        catalog: ArcSwap::from_pointee(catalog),
        auth: auth::Authenticator::new(&gateway.auth, channel.clone())
            .with_resource(&gateway.auth, &mcp::resource_of(&gateway)),
        preferences: upstream::Preferences::new(channel.clone(), upstream::PREFERENCES_TTL),
        channel,
        limits: gateway.limits.clone(),
        log: AccessLog::start(crate::access_log::Sink::Stdout, metrics.log_lines_dropped.clone()),
        metrics,
        mcp: gateway.mcp.enabled.then(|| mcp::Endpoint::new(&gateway)),
        rate_limits,
        cache,
    });

    let (stopping, stopped) = watch::channel(false);
    let (mesh_updates, updates) = watch::channel(Arc::new(mesh));
    let outbound = gateway.sidecar.outbound;
    tokio::spawn({
        let mut stopped = stopped.clone();
        async move {
            let reflect = |service: &str| reflection_channel(outbound, service);
            let stop = async move {
                let _ = stopped.changed().await;
            };
            meshwork_contracts::follow(mesh_updates, FOLLOW_INTERVAL, reflect, stop).await;
        }
    });
    tokio::spawn(follow_catalog(updates, shared.clone()));

    let ready = Arc::new(AtomicBool::new(false));
    let admin_task = tokio::spawn(admin::serve(admin, registry, ready.clone(), stopped.clone()));
    let serving = tokio::spawn({
        let (shared, cors) = (shared.clone(), gateway.cors.clone());
        let stopped = stopped.clone();
        async move { server::serve(public, tls, shared, &cors, stopped).await }
    });
    ready.store(true, Ordering::Relaxed);
    println!(
        "gateway: serving REST, gRPC-Web and gRPC on {}://{} (admin {})",
        if gateway.tls.is_some() { "https" } else { "http" },
        gateway.listen,
        gateway.admin
    );
    stop.await;
    ready.store(false, Ordering::Relaxed);
    let _ = stopping.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
    let _ = admin_task.await;
    Ok(())
}

/// Rebuilds the method table from each new snapshot; a snapshot whose
/// HTTP rules do not hold keeps the table in force, and says why.
async fn follow_catalog(mut updates: watch::Receiver<Arc<Mesh>>, shared: Arc<Shared>) {
    while updates.changed().await.is_ok() {
        let mesh = updates.borrow_and_update().clone();
        match Catalog::build(&mesh) {
            Ok(catalog) => {
                tracing::info!(routes = catalog.routes().len(), "gateway: method table updated");
                shared.catalog.store(Arc::new(catalog));
            }
            Err(error) => {
                tracing::error!(%error, "gateway: contracts changed but cannot be served; keeping the old table")
            }
        }
    }
}

/// A channel to a service's app through the gateway's sidecar, for reading
/// its contracts by reflection.
fn reflection_channel(outbound: std::net::SocketAddr, service: &str) -> Option<tonic::transport::Channel> {
    let origin = format!("http://{service}").parse().ok()?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{outbound}")).ok()?;
    Some(endpoint.origin(origin).timeout(Duration::from_secs(5)).connect_lazy())
}
