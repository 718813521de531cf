//! A real server on 127.0.0.1:0 for the services' integration tests: the same
//! `serve_on` as production, just stopped when the test drops it.

use std::net::SocketAddr;

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{service::Routes, transport::Channel};

use crate::{ServeError, bind, serve_on, sidecar_channel};

/// A server running in the background until dropped or [`stopped`](Self::stop).
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Serves `routes` (plus health and reflection) on a fresh loopback port.
    pub async fn start(routes: Routes, grpc_services: &[&str]) -> Result<Self, ServeError> {
        let (listener, _) = Self::listener().await?;
        Self::start_on(listener, routes, grpc_services)
    }

    /// A bound listener on a fresh loopback port and its address, for services
    /// that must know the server's address before it serves (their own
    /// "sidecar" is the same server).
    pub async fn listener() -> Result<(TcpListener, SocketAddr), ServeError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = bind(any).await?;
        let addr = listener
            .local_addr()
            .map_err(|cause| ServeError::Bind { addr: any, cause })?;
        Ok((listener, addr))
    }

    /// Serves `routes` on `listener` (from [`listener`](Self::listener)).
    pub fn start_on(listener: TcpListener, routes: Routes, grpc_services: &[&str]) -> Result<Self, ServeError> {
        let addr = listener.local_addr().map_err(|cause| ServeError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cause,
        })?;
        let names: Vec<String> = grpc_services.iter().map(|s| (*s).to_owned()).collect();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            serve_on(listener, routes, &names, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// A channel to the server (connects on first use).
    pub fn channel(&self) -> Channel {
        sidecar_channel(self.addr)
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
