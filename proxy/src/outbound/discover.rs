//! Discovery: which endpoints (replica inbound addresses) each destination
//! has, followed while the sidecar runs: from mesh.toml (each replica's
//! `inbound`), or, for a service with `endpoints`, from a DNS name that a
//! task of its own follows (`dns.rs`). Each new set is turned into
//! `tower::discover::Change`s against the balancer's current set (inserted
//! replicas get a fresh client; removed ones finish their calls in flight,
//! so a pod that leaves DNS is drained, not cut off); each configuration
//! the watch publishes also makes a new policy snapshot.
//! A service removed from the file keeps its last endpoints and policy:
//! routes are fixed at start, and a call to a vanished service is better
//! answered by the replicas that may still run than refused.

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use meshwork_config::{Discovery, DnsEndpoints, MeshConfig};
use meshwork_contracts::{Mesh, Registry};
use parking_lot::Mutex;
use tokio::{
    sync::{Notify, watch},
    task::AbortHandle,
};
use tower::discover::Change;

use super::{
    balance::{Endpoint, EndpointSet},
    dns,
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

/// Builds an endpoint's stack (client, failure accrual); `None` when it
/// cannot (logged).
pub type MakeEndpoint<S> = Arc<dyn Fn(SocketAddr) -> Option<Endpoint<S>> + Send + Sync>;

/// One destination as discovery keeps it up to date.
pub struct Followed<S> {
    pub name: Arc<str>,
    pub policy: PolicyHandle,
    pub set: Arc<EndpointSet<S>>,
    pub make: MakeEndpoint<S>,
    /// Notified when a call to one of the endpoints fails; a DNS follower
    /// then asks again at once.
    pub refresh: Arc<Notify>,
    /// The DNS name followed for a service with `endpoints`, with what it
    /// was started for.
    dns: Mutex<Option<(DnsEndpoints, Discovery, AbortHandle)>>,
}

impl<S: Send + Sync + 'static> Followed<S> {
    pub fn new(
        name: Arc<str>,
        policy: PolicyHandle,
        set: Arc<EndpointSet<S>>,
        make: MakeEndpoint<S>,
        refresh: Arc<Notify>,
    ) -> Self {
        Followed {
            name,
            policy,
            set,
            make,
            refresh,
            dns: Mutex::new(None),
        }
    }

    pub fn update(&self, config: &MeshConfig, registry: &Registry) {
        let Some(service) = config.services.get(self.name.as_ref()) else {
            tracing::warn!(destination = %self.name, "service no longer in mesh.toml; keeping its last endpoints");
            return;
        };
        self.policy
            .store(Arc::new(DestinationPolicy::new(&self.name, service, config, registry)));
        match &service.endpoints {
            Some(target) => self.follow_dns(target, config.discovery),
            None => {
                if let Some((_, _, task)) = self.dns.lock().take() {
                    task.abort();
                }
                apply(&self.name, &self.set, &self.make, &endpoints_of(config, &self.name));
            }
        }
    }

    /// Starts following `target` unless that is already done with the same settings.
    fn follow_dns(&self, target: &DnsEndpoints, discovery: Discovery) {
        let mut followed = self.dns.lock();
        if let Some((t, d, _)) = &*followed
            && t == target
            && *d == discovery
        {
            return;
        }
        if let Some((_, _, task)) = followed.take() {
            task.abort();
        }
        tracing::info!(destination = %self.name, endpoints = %target, "following DNS");
        let (name, set, make) = (self.name.clone(), self.set.clone(), self.make.clone());
        let task = tokio::spawn(dns::follow(
            self.name.clone(),
            target.clone(),
            discovery,
            self.refresh.clone(),
            move |desired: Option<BTreeSet<SocketAddr>>| match desired {
                Some(desired) => apply(&name, &set, &make, &desired),
                // Kept as it was; calls stop waiting for a first answer.
                None => set.mark_answered(),
            },
        ));
        *followed = Some((target.clone(), discovery, task.abort_handle()));
    }
}

impl<S> Drop for Followed<S> {
    fn drop(&mut self) {
        if let Some((_, _, task)) = self.dns.lock().take() {
            task.abort();
        }
    }
}

/// Makes `set` hold exactly `desired`, logging what changed.
fn apply<S>(name: &str, set: &EndpointSet<S>, make: &MakeEndpoint<S>, desired: &BTreeSet<SocketAddr>) {
    let current = set.addrs();
    let changes = diff(&current, desired, |addr| make(addr));
    for change in &changes {
        match change {
            Change::Insert(addr, _) => tracing::info!(destination = %name, endpoint = %addr, "endpoint added"),
            Change::Remove(addr) => tracing::info!(destination = %name, endpoint = %addr, "endpoint removed"),
        }
    }
    set.apply(changes);
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
pub async fn follow<S: Send + Sync + 'static>(mut updates: watch::Receiver<Arc<Mesh>>, destinations: Vec<Followed<S>>) {
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

    /// A service with `endpoints` gets its set from DNS, through the same
    /// balancer set the static replicas use; a reload back to fixed
    /// addresses stops following.
    #[tokio::test]
    async fn a_dns_name_fills_the_balancers_set_and_follows_its_changes() {
        use std::sync::atomic::Ordering::Relaxed;

        use prometheus_client::metrics::counter::Counter;

        use crate::outbound::{accrual::AccrualState, dns::tests as test_dns};

        let dns = Arc::new(test_dns::TestDns::default());
        dns.ttl.store(1, Relaxed);
        dns.set(
            "catalog.shop.svc.cluster.local",
            &[[10, 215, 0, 11].into(), [10, 215, 0, 12].into()],
        );
        let nameserver = test_dns::start(dns.clone()).await;
        let text = |endpoints: &str| {
            format!(
                r#"
                trust_domain = "t.local"
                [discovery]
                nameserver = "{nameserver}"
                [services.catalog]
                app = "127.0.0.1:7102"
                inbound = "0.0.0.0:7202"
                outbound = "127.0.0.1:7302"
                admin = "0.0.0.0:7402"
                grpc_services = ["shop.catalog.v1.CatalogService"]
                {endpoints}
                "#
            )
        };
        let config = |endpoints: &str| {
            Arc::new(MeshConfig::parse(&text(endpoints), std::path::Path::new("mesh.toml")).expect("config"))
        };
        let with_dns = config(r#"endpoints = "catalog.shop.svc.cluster.local:7202""#);
        let registry = Registry::default();
        let name: Arc<str> = "catalog".into();
        let set = Arc::new(EndpointSet::<()>::new(name.clone()));
        let make: MakeEndpoint<()> = Arc::new(|addr| {
            let accrual = Arc::new(AccrualState::new("catalog".into(), addr, 1, Counter::default()));
            Some(Endpoint::new(addr, (), accrual))
        });
        let policy = policy_handle("catalog", &with_dns, &registry).expect("policy");
        let followed = Followed::new(name, policy, set.clone(), make, Arc::new(Notify::new()));
        followed.update(&with_dns, &registry);
        let wait_for = |want: Vec<SocketAddr>| {
            let set = set.clone();
            async move {
                let start = tokio::time::Instant::now();
                while set.addrs() != want {
                    assert!(
                        start.elapsed() < std::time::Duration::from_secs(3),
                        "{:?} != {want:?}",
                        set.addrs()
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        let pod = |last: u8| SocketAddr::from(([10, 215, 0, last], 7202));
        wait_for(vec![pod(11), pod(12)]).await;
        dns.set(
            "catalog.shop.svc.cluster.local",
            &[[10, 215, 0, 12].into(), [10, 215, 0, 13].into()],
        );
        wait_for(vec![pod(12), pod(13)]).await;

        // Back to fixed addresses: the inbound of each replica, and DNS no
        // longer followed.
        let fixed = config("");
        followed.update(&fixed, &registry);
        wait_for(vec![SocketAddr::from(([0, 0, 0, 0], 7202))]).await;
        let questions = dns.questions.load(Relaxed);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(dns.questions.load(Relaxed), questions, "still asking DNS");
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
