//! The accept loop every listener shares: a bounded number of open
//! connections, and on shutdown: stop accepting, let open connections finish
//! their in-flight streams (HTTP/2 GOAWAY, HTTP/1 close after the response),
//! and give up after a grace period.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{options::Settings, shutdown::Shutdown};

/// The HTTP/2 server for one accepted connection (inbound or outbound), with
/// the sidecar's stream limit and keep-alive.
pub fn http2(settings: &Settings) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .keep_alive_interval(Some(settings.keepalive_interval));
    builder
}

/// Accepts connections on `listener` and runs `handle` for each in its own
/// task until shutdown; then drains. `label` names the listener in logs;
/// `open`, if given, counts the open connections.
pub async fn serve<H, F>(
    label: Arc<str>,
    listener: TcpListener,
    max_connections: usize,
    grace: Duration,
    mut shutdown: Shutdown,
    open: Option<Gauge>,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, Watcher) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // Take a slot before accepting, so at the limit connections queue in
        // the kernel's backlog rather than being accepted and starved.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = shutdown.requested() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.requested() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let connection = handle(stream, peer, graceful.watcher());
                let open = open.clone();
                if let Some(open) = &open {
                    open.inc();
                }
                tokio::spawn(async move {
                    connection.await;
                    if let Some(open) = open {
                        open.dec();
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                // Usually out of file descriptors; pause rather than spin.
                tracing::warn!(listener = %label, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(listener = %label, open, "draining connections");
    }
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(listener = %label, ?grace, "connections still open after the grace period; closing them");
    }
}
