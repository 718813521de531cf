//! The outbound stack, composed in one place, top to bottom in the order a
//! call goes through it: route by gRPC service, then (per destination)
//! forward over pooled mTLS HTTP/2. Later steps (deadlines, retries, load
//! balancing, failure accrual) slot in per destination, between route and
//! forward, in the order DESIGN.md lists them.

use meshwork_config::MeshConfig;
use tower::ServiceBuilder;

use super::{
    connect::MtlsConnector,
    destination::{Destination, ExpectedIdentity},
    forward::Forward,
    route::Route,
};
use crate::{
    identity::{Identity, IdentityError, client_config},
    options::Settings,
    param::Param,
};

/// The whole outbound stack as served on the outbound listener.
pub type Outbound = Route<Forward>;

pub fn build(config: &MeshConfig, identity: &Identity, settings: &Settings) -> Result<Outbound, IdentityError> {
    // (issue 3: trace context, client span: layers above the route)
    Route::new(config, &Destination::all(config), |destination| {
        let ExpectedIdentity(expected) = destination.param();
        let who = format!("{} at {}", destination.name, destination.addr);
        let tls = client_config(identity, &expected, &who)?;
        let connector = MtlsConnector::new(destination, tls, settings.connect_timeout, settings.handshake_timeout);
        Ok(ServiceBuilder::new()
            // (deadline, retry, balance, failure accrual go here)
            .service(Forward::new(destination, connector, settings)))
    })
}
