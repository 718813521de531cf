//! Discovery: which endpoints (replica inbound addresses) each destination
//! has, from mesh.toml, followed while the sidecar runs. Each configuration
//! the watch publishes is turned into `tower::discover::Change`s against
//! the balancer's current set (inserted replicas get a fresh client; removed
//! ones finish their calls in flight) and into a new policy snapshot.
//! A service removed from the file keeps its last endpoints and policy:
//! routes are fixed at start, and a call to a vanished service is better
//! answered by the replicas that may still run than refused.

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use meshwork_config::MeshConfig;
use meshwork_contracts::{Mesh, Registry};
use tokio::sync::watch;
use tower::discover::Change;

use super::{
    balance::{Endpoint, EndpointSet},
    policy::{DestinationPolicy, PolicyHandle},
};

/// Every replica's inbound address of service `name`.
pub fn endpoints_of(config: &MeshConfig, name: &str) -> BTreeSet<SocketAddr> {
    config
        .services
        .get(name)
        .map(|s| s.replica_set(config.replica_port_step).map(|r| r.inbound).collect())
        .unwrap_or_default()
}

/// The changes that turn `current` into `desired`: inserts (made by
/// `make`) for the new addresses, removes for the gone ones.
pub fn diff<E>(
    current: &[SocketAddr],
    desired: &BTreeSet<SocketAddr>,
    mut make: impl FnMut(SocketAddr) -> Option<E>,
) -> Vec<Change<SocketAddr, E>> {
    let mut changes: Vec<_> = current
        .iter()
        .filter(|a| !desired.contains(a))
        .map(|a| Change::Remove(*a))
        .collect();
    for addr in desired.iter().filter(|a| !current.contains(a)) {
        if let Some(endpoint) = make(*addr) {
            changes.push(Change::Insert(*addr, endpoint));
        }
    }
    changes
}

/// One destination as discovery keeps it up to date.
pub struct Followed<S> {
    pub name: Arc<str>,
    pub policy: PolicyHandle,
    pub set: Arc<EndpointSet<S>>,
    /// Builds an endpoint's stack (client, failure accrual); `None` when it
    /// cannot (logged).
    pub make: Box<dyn Fn(SocketAddr) -> Option<Endpoint<S>> + Send + Sync>,
}

impl<S> Followed<S> {
    pub fn update(&self, config: &MeshConfig, registry: &Registry) {
        let Some(service) = config.services.get(self.name.as_ref()) else {
            tracing::warn!(destination = %self.name, "service no longer in mesh.toml; keeping its last endpoints");
            return;
        };
        self.policy
            .store(Arc::new(DestinationPolicy::new(&self.name, service, config, registry)));
        let desired = endpoints_of(config, &self.name);
        let current = self.set.addrs();
        let changes = diff(&current, &desired, |addr| (self.make)(addr));
        for change in &changes {
            match change {
                Change::Insert(addr, _) => tracing::info!(destination = %self.name, endpoint = %addr, "endpoint added"),
                Change::Remove(addr) => tracing::info!(destination = %self.name, endpoint = %addr, "endpoint removed"),
            }
        }
        self.set.apply(changes);
    }
}

/// A fresh policy handle for `name`.
pub fn policy_handle(name: &str, config: &MeshConfig, registry: &Registry) -> Option<PolicyHandle> {
    let service = config.services.get(name)?;
    Some(Arc::new(ArcSwap::from_pointee(DestinationPolicy::new(
        name, service, config, registry,
    ))))
}

/// Applies every snapshot (mesh.toml and its contracts) the watch
/// publishes, until it closes (the sidecar is shutting down).
pub async fn follow<S>(mut updates: watch::Receiver<Arc<Mesh>>, destinations: Vec<Followed<S>>) {
    while updates.changed().await.is_ok() {
        let mesh = updates.borrow_and_update().clone();
        for destination in &destinations {
            destination.update(&mesh.config, &mesh.registry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    #[test]
    fn diff_inserts_and_removes() {
        let desired: BTreeSet<_> = [addr(1), addr(3)].into();
        let changes = diff(&[addr(1), addr(2)], &desired, |a| Some(a.port()));
        let described: Vec<_> = changes
            .iter()
            .map(|c| match c {
                Change::Insert(a, e) => format!("+{a}={e}"),
                Change::Remove(a) => format!("-{a}"),
            })
            .collect();
        assert_eq!(described, ["-127.0.0.1:2", "+127.0.0.1:3=3"]);
        assert!(diff::<()>(&[addr(1)], &[addr(1)].into(), |_| None).is_empty());
    }

    #[test]
    fn replicas_are_endpoints() {
        let config = MeshConfig::parse(
            r#"
            trust_domain = "t.local"
            replica_port_step = 100
            [services.catalog]
            app = "127.0.0.1:7100"
            inbound = "127.0.0.1:7101"
            outbound = "127.0.0.1:7102"
            admin = "127.0.0.1:7103"
            grpc_services = ["shop.catalog.v1.CatalogService"]
            replicas = 3
            "#,
            std::path::Path::new("mesh.toml"),
        )
        .expect("config");
        let got: Vec<_> = endpoints_of(&config, "catalog").into_iter().collect();
        assert_eq!(got, [addr(7101), addr(7201), addr(7301)]);
        assert!(endpoints_of(&config, "nope").is_empty());
    }
}
