//! The last inbound step: forward the call to the app over a shared,
//! plaintext HTTP/2 connection on loopback (see `forward.rs`).

use std::net::SocketAddr;

use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::{
    forward::{Forwarder, Upstream},
    options::Settings,
};

pub type ToApp = Forwarder<HttpConnector, Incoming>;

/// The forwarder to `app`; `service` names it in messages
/// ("echo app (127.0.0.1:7101)").
pub fn to_app(service: &str, app: SocketAddr, settings: &Settings) -> ToApp {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(settings.connect_timeout));
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
