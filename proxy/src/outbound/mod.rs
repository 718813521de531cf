//! The outbound side: the app's plaintext HTTP/2 calls arrive here on
//! loopback and go through the outbound stack (route, deadline, retry,
//! faults, balance, failure accrual, forward over mTLS; see `stack.rs`).

mod accrual;
mod backoff;
mod balance;
mod budget;
mod connect;
mod deadline;
mod destination;
mod discover;
mod ewma;
mod fault;
mod forward;
mod metrics;
mod policy;
mod replay;
mod retry;
mod route;
mod stack;
mod trailers;
mod warm;

use std::{net::SocketAddr, sync::Arc};

use hyper_util::{rt::TokioIo, server::graceful::Watcher, service::TowerToHyperService};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};

pub use connect::ConnectError;
pub use retry::Attempts;
pub use route::RouteTable;
pub use stack::{Outbound, build};

use crate::{
    options::Settings,
    serve::{http2, serve},
    shutdown::Shutdown,
};

/// Serves the outbound listener until shutdown.
/// `open` counts the open connections.
pub async fn run(
    sidecar: &str,
    listener: TcpListener,
    stack: Outbound,
    open: Gauge,
    settings: &Settings,
    shutdown: Shutdown,
) {
    let label: Arc<str> = format!("{sidecar} outbound").into();
    let shared = Arc::new((stack, settings.clone()));
    serve(
        label,
        listener,
        settings.max_connections,
        settings.drain_grace,
        shutdown,
        Some(open),
        move |stream, peer, watcher| connection(shared.clone(), stream, peer, watcher),
    )
    .await;
}

async fn connection(shared: Arc<(Outbound, Settings)>, stream: TcpStream, peer: SocketAddr, watcher: Watcher) {
    let (stack, settings) = &*shared;
    let _ = stream.set_nodelay(true);
    let connection = http2(settings).serve_connection(TokioIo::new(stream), TowerToHyperService::new(stack.clone()));
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, %error, "outbound connection ended with an error");
    }
}
