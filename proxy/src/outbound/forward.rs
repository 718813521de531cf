//! The last outbound step: send the call to one endpoint (a replica's
//! sidecar) over its mTLS HTTP/2 connection (see `forward.rs` at the crate
//! root). Each endpoint has its own forwarder and connection.

use http::uri::{Authority, Scheme};

use super::{
    connect::MtlsConnector,
    destination::{Destination, ServiceName},
    replay::ReplayBody,
};
use crate::{
    forward::{Forwarder, Upstream},
    options::Settings,
    param::Param,
};

pub type Forward = Forwarder<MtlsConnector, ReplayBody>;

/// The forwarder to `destination`'s endpoint, connecting with `connector`.
pub fn forward(destination: &Destination, connector: MtlsConnector, settings: &Settings) -> Forward {
    let ServiceName(name) = destination.param();
    // The destination's name is the `:authority` of forwarded calls.
    let authority = Authority::try_from(name.as_ref()).unwrap_or_else(|_| Authority::from_static("mesh"));
    let upstream = Upstream {
        // The connector does the TLS.
        scheme: Scheme::HTTPS,
        authority,
        label: destination.label().into(),
        is_sidecar: true,
    };
    Forwarder::new(connector, upstream, settings)
}
