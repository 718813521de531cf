//! The last inbound step: forward the call to the app over a shared,
//! plaintext HTTP/2 connection on loopback (see `forward.rs`).

use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};

use crate::body::RecvBody;
use http::uri::{Authority, Scheme};
use tokio::net::TcpStream;

use crate::{
    connection::{BoxError, Connect},
    forward::{Forwarder, Upstream},
    options::Settings,
};

pub type ToApp = Forwarder<AppConnector, RecvBody>;

/// The forwarder to `app`; `service` names it in messages
/// ("echo app (127.0.0.1:7101)").
pub fn to_app(service: &str, app: SocketAddr, settings: &Settings) -> ToApp {
    let connector = AppConnector {
        addr: app,
        timeout: settings.connect_timeout,
    };
    // A SocketAddr always forms a valid authority; fall back to the
    // loopback name rather than fail if that ever changed.
    let authority = Authority::try_from(app.to_string()).unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
    let upstream = Upstream {
        scheme: Scheme::HTTP,
        authority,
        label: format!("{service} app ({app})").into(),
        is_sidecar: false,
    };
    Forwarder::new(connector, upstream, settings)
}

/// Plain TCP to the app, with a timeout and without Nagle's delay.
pub struct AppConnector {
    addr: SocketAddr,
    timeout: Duration,
}

impl Connect for AppConnector {
    type Io = TcpStream;

    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<TcpStream, BoxError>> + Send>> {
        let (addr, timeout) = (self.addr, self.timeout);
        Box::pin(async move {
            let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| format!("connect timed out after {timeout:?}"))??;
            tcp.set_nodelay(true)?;
            Ok(tcp)
        })
    }
}
