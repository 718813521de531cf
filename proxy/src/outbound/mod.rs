//! The outbound side: the app's plaintext HTTP/2 calls arrive here on
//! loopback and go through the outbound stack (route, forward over mTLS).

mod connect;
mod destination;
mod forward;
mod route;
mod stack;

use std::{net::SocketAddr, sync::Arc};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::Watcher,
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpStream};

pub use connect::ConnectError;
pub use stack::{Outbound, build};

use crate::{options::Settings, serve::serve, shutdown::Shutdown};

/// Serves the outbound listener until shutdown.
pub async fn run(sidecar: &str, listener: TcpListener, stack: Outbound, settings: &Settings, shutdown: Shutdown) {
    let label: Arc<str> = format!("{sidecar} outbound").into();
    let shared = Arc::new((stack, settings.clone()));
    serve(
        label,
        listener,
        settings.max_connections,
        settings.drain_grace,
        shutdown,
        move |stream, peer, watcher| connection(shared.clone(), stream, peer, watcher),
    )
    .await;
}

async fn connection(shared: Arc<(Outbound, Settings)>, stream: TcpStream, peer: SocketAddr, watcher: Watcher) {
    let (stack, settings) = &*shared;
    let _ = stream.set_nodelay(true);
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .keep_alive_interval(Some(settings.keepalive_interval))
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(stack.clone()));
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, %error, "outbound connection ended with an error");
    }
}
