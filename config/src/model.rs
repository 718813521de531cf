//! The validated shape of a mesh: workloads, their addresses, their gRPC
//! services and who may call them.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

/// The whole mesh, as described by one `mesh.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// The file this was read from (for messages), or a name given by the caller.
    pub source: PathBuf,
    /// SPIFFE trust domain, for example `meshwork.local`.
    pub trust_domain: String,
    /// Certificates, keys and databases, resolved against the file's folder.
    pub state_dir: PathBuf,
    /// Lifetime of each issued workload certificate.
    pub leaf_lifetime: Duration,
    /// Services: an app and its sidecar.
    pub services: BTreeMap<String, Service>,
    /// Clients: an identity and an outbound sidecar, without an app.
    pub clients: BTreeMap<String, Client>,
}

/// One mesh service: an app on `app` and its sidecar's three listeners.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Where the app serves plain HTTP/2 (loopback only).
    pub app: SocketAddr,
    /// The sidecar's mutual-TLS listener that peers' sidecars call.
    pub inbound: SocketAddr,
    /// The sidecar's plaintext listener for the app's own outgoing calls (loopback only).
    pub outbound: SocketAddr,
    /// The sidecar's `/live`, `/ready` and `/metrics` (loopback only).
    pub admin: SocketAddr,
    /// Fully qualified gRPC services the app serves, for example `shop.cart.v1.CartService`.
    pub grpc_services: Vec<String>,
    /// Who may call this service. `None` (key absent) lets any mesh identity
    /// call; an empty list lets nobody.
    #[serde(default)]
    pub allow: Option<Vec<AllowRule>>,
}

/// An identity that only calls out: an outbound sidecar with no app behind it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

/// One authorization rule: `from` may call `methods` (all methods when empty).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// The calling workload's name (a service or a client).
    pub from: String,
    /// `Method` (any of the service's gRPC services) or `pkg.Service/Method`.
    #[serde(default)]
    pub methods: Vec<String>,
}

impl AllowRule {
    /// Whether this rule lets `caller` call `grpc_service`/`method`.
    pub fn permits(&self, caller: &str, grpc_service: &str, method: &str) -> bool {
        self.from == caller
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| match m.split_once('/') {
                    Some((service, name)) => service == grpc_service && name == method,
                    None => m == method,
                }))
    }
}

impl Service {
    /// Whether the policy lets `caller` call `grpc_service`/`method` on this service.
    pub fn permits(&self, caller: &str, grpc_service: &str, method: &str) -> bool {
        match &self.allow {
            None => true,
            Some(rules) => rules.iter().any(|r| r.permits(caller, grpc_service, method)),
        }
    }
}

/// What one sidecar needs to know about its own workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidecarSpec<'a> {
    pub name: &'a str,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    /// The service behind the sidecar; `None` for a client.
    pub service: Option<&'a Service>,
}

impl MeshConfig {
    /// The SPIFFE ID of a workload: `spiffe://<trust-domain>/service/<name>`.
    pub fn spiffe_id(&self, workload: &str) -> String {
        spiffe_id(&self.trust_domain, workload)
    }

    /// Every workload that gets an identity: services, then clients.
    pub fn workload_names(&self) -> impl Iterator<Item = &str> {
        self.services.keys().chain(self.clients.keys()).map(String::as_str)
    }

    /// The sidecar of a workload, service or client.
    pub fn sidecar(&self, name: &str) -> Option<SidecarSpec<'_>> {
        if let Some((name, service)) = self.services.get_key_value(name) {
            return Some(SidecarSpec {
                name,
                outbound: service.outbound,
                admin: service.admin,
                service: Some(service),
            });
        }
        self.clients.get_key_value(name).map(|(name, client)| SidecarSpec {
            name,
            outbound: client.outbound,
            admin: client.admin,
            service: None,
        })
    }

    /// The mesh service that serves a fully qualified gRPC service.
    pub fn service_serving(&self, grpc_service: &str) -> Option<(&str, &Service)> {
        self.services
            .iter()
            .find(|(_, s)| s.grpc_services.iter().any(|g| g == grpc_service))
            .map(|(name, s)| (name.as_str(), s))
    }
}

/// `spiffe://<trust-domain>/service/<name>`, the identity in a workload's certificate.
pub fn spiffe_id(trust_domain: &str, workload: &str) -> String {
    format!("spiffe://{trust_domain}/service/{workload}")
}
