//! A destination: one mesh service as seen from the outbound side, with what
//! each outbound layer needs to know about it.

use std::{net::SocketAddr, sync::Arc};

use meshwork_config::MeshConfig;

use crate::param::Param;

#[derive(Debug, Clone)]
pub struct Destination {
    /// The mesh service's name, for example `catalog`.
    pub name: Arc<str>,
    /// Its sidecar's inbound (mTLS) address.
    pub addr: SocketAddr,
    /// The SPIFFE ID its certificate must carry.
    pub identity: Arc<str>,
}

impl Destination {
    /// Every mesh service, in name order.
    pub fn all(config: &MeshConfig) -> Vec<Destination> {
        config
            .services
            .iter()
            .map(|(name, service)| Destination {
                name: name.as_str().into(),
                addr: service.inbound,
                identity: config.spiffe_id(name).into(),
            })
            .collect()
    }

    /// `catalog (127.0.0.1:7202)`, how messages name it.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.addr)
    }
}

/// The address to connect to.
impl Param<SocketAddr> for Destination {
    fn param(&self) -> SocketAddr {
        self.addr
    }
}

/// The identity the peer must prove.
pub struct ExpectedIdentity(pub Arc<str>);

impl Param<ExpectedIdentity> for Destination {
    fn param(&self) -> ExpectedIdentity {
        ExpectedIdentity(self.identity.clone())
    }
}

/// The service's name, used as `:authority` and TLS server name.
pub struct ServiceName(pub Arc<str>);

impl Param<ServiceName> for Destination {
    fn param(&self) -> ServiceName {
        ServiceName(self.name.clone())
    }
}
