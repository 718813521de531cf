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
mod dns;
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

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};

pub use connect::ConnectError;
pub(crate) use deadline::parse_timeout;
pub use retry::Attempts;
pub use route::RouteTable;
pub use stack::{Outbound, build};

use crate::{options::Settings, serve::serve, server::Http2Server, shutdown::Shutdown};

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
    let shared = Arc::new((stack, Http2Server::new(settings)));
    serve(
        label,
        listener,
        settings.max_connections,
        settings.drain_grace,
        shutdown,
        Some(open),
        move |stream, peer, shutdown| connection(shared.clone(), stream, peer, shutdown),
    )
    .await;
}

async fn connection(shared: Arc<(Outbound, Http2Server)>, stream: TcpStream, peer: SocketAddr, shutdown: Shutdown) {
    let (stack, server) = &*shared;
    let _ = stream.set_nodelay(true);
    if let Err(error) = server.serve(stream, stack.clone(), shutdown).await {
        tracing::debug!(%peer, %error, "outbound connection ended with an error");
    }
}
