//! Serving a service's routes with gRPC health and reflection beside them, and
//! shutting down gracefully: health turns NOT_SERVING first, then in-flight calls get
//! a bounded time to finish.

use std::{future::Future, io, net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, sync::oneshot};
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tonic::{service::Routes, transport::Server};
use tonic_health::ServingStatus;

use crate::{ServeArgs, ServerSpanLayer};

/// How long in-flight calls may run on after a shutdown signal. Server streams (such as
/// a product watch or a health watch) never end by themselves, so the drain must be
/// bounded or shutdown would wait forever.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The name gRPC health checks use for the health service itself.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// As many streams reset before they are taken as the sidecar may have open
/// to us (its default stream limit).
const PENDING_ACCEPT_RESETS: usize = 1024;

/// Why a service could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid arguments: {0}")]
    Args(String),
    #[error("address {addr} is already in use (is another copy of the service running?)")]
    AddrInUse { addr: SocketAddr },
    /// Messages that say their cause do not return it again as `source()`,
    /// and those that return it do not say it: a chain printed whole would
    /// otherwise say it twice.
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: SocketAddr, cause: io::Error },
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `addr`, with an error that names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => ServeError::AddrInUse { addr },
        _ => ServeError::Bind { addr, cause: source },
    })
}

/// Validates `args`, binds `args.listen` and serves `routes` until SIGTERM or Ctrl-C.
/// `grpc_services` are the full names (`pkg.Service`) of what `routes` holds; health
/// reports them and reflection describes them.
pub async fn serve(args: &ServeArgs, routes: Routes, grpc_services: &[&str]) -> Result<(), ServeError> {
    let shutdown = shutdown_signal();
    args.validate().map_err(ServeError::Args)?;
    let listener = bind(args.listen).await?;
    serve_on(listener, routes, grpc_services, shutdown).await
}

/// Serves `routes` plus health and reflection (v1 and v1alpha) on an already bound
/// listener until `shutdown` completes, then drains for at most [`DRAIN_TIMEOUT`].
pub async fn serve_on(
    listener: TcpListener,
    routes: Routes,
    grpc_services: &[&str],
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(meshwork_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(HEALTH_SERVICE);
        for name in grpc_services {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let router = Server::builder()
        // The only caller is our sidecar, which passes its callers'
        // cancellations on as they come: a burst of calls whose deadlines
        // passed in flight arrives as streams reset before we take them, and
        // at h2's default bound of 20 the connection (and every call on it)
        // would be closed with GOAWAY.
        .http2_max_pending_accept_reset_streams(Some(PENDING_ACCEPT_RESETS))
        // Every call gets a server span, child of the caller's trace context.
        .layer(ServerSpanLayer)
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);

    let set_all = |status: ServingStatus| {
        let health = health.clone();
        async move {
            for name in grpc_services.iter().copied().chain([""]) {
                health.set_service_status(name, status).await;
            }
        }
    };

    let local = listener.local_addr().ok();
    let (stop, stopped) = oneshot::channel::<()>();
    // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to small
    // responses; tonic sets it only on listeners it binds itself.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok::<_, io::Error>(conn)
    });
    let server = router.serve_with_incoming_shutdown(incoming, async {
        // An Err means the sender is gone, which also means: stop.
        let _ = stopped.await;
    });
    tokio::pin!(server);
    // The listener is bound and the server polls it from the first await below, so
    // callers connecting now are queued, not refused: it is fair to say SERVING.
    set_all(ServingStatus::Serving).await;
    tracing::info!(addr = ?local, services = ?grpc_services, "serving");

    tokio::select! {
        result = &mut server => return result.map_err(ServeError::from),
        () = shutdown => {}
    }
    tracing::info!(addr = ?local, "shutting down");
    set_all(ServingStatus::NotServing).await;
    let _ = stop.send(());
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!(?DRAIN_TIMEOUT, "calls still open after the drain time; closing them"),
    }
    tracing::info!(addr = ?local, "stopped");
    Ok(())
}

/// Completes on SIGTERM (how Kubernetes and the `mesh` launcher stop a process) or
/// Ctrl-C received after this call.
///
/// The handlers are installed by this call, not when the future is first polled:
/// until then SIGTERM's default action would end the process without draining or
/// stopping what it started. Call it early, inside the runtime.
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let listen = |kind: SignalKind, name: &str| {
        signal(kind)
            .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for {name}"))
            .ok()
    };
    let (mut term, mut int) = (
        listen(SignalKind::terminate(), "SIGTERM"),
        listen(SignalKind::interrupt(), "SIGINT"),
    );
    async move {
        async fn received(signal: Option<&mut Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = received(term.as_mut()) => {}
            () = received(int.as_mut()) => {}
        }
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
