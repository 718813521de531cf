//! The accept loop every listener shares: a bounded number of open
//! connections, and on shutdown: stop accepting, let open connections finish
//! their in-flight streams (each connection is handed the [`Shutdown`] and
//! says GOAWAY, or closes after its response on HTTP/1), and give up after a
//! grace period.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::shutdown::Shutdown;

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
    H: Fn(TcpStream, SocketAddr, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    // One permit per open connection: they all come back once every
    // connection has ended, which is what draining waits for.
    let max_connections = u32::try_from(max_connections.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max_connections as usize));
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
                let connection = handle(stream, peer, shutdown.clone());
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
    let open = max_connections as usize - slots.available_permits();
    if open > 0 {
        tracing::info!(listener = %label, open, "draining connections");
    }
    if tokio::time::timeout(grace, slots.acquire_many(max_connections))
        .await
        .is_err()
    {
        tracing::warn!(listener = %label, ?grace, "connections still open after the grace period; closing them");
    }
}
