//! The validated shape of a mesh: workloads, their addresses, their gRPC
//! services and who may call them.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::policy::{Fault, MethodPolicy, RetryPolicy, Telemetry, method_matches};

/// The environment variables `mesh up` gives every app it starts, so an app
/// in any language learns where it stands without parsing mesh.toml.
pub mod app_env {
    /// The service's name in mesh.toml.
    pub const SERVICE: &str = "MESH_SERVICE";
    /// Which replica this is, from 0.
    pub const REPLICA: &str = "MESH_REPLICA";
    /// The address the app must serve plaintext HTTP/2 gRPC on (loopback).
    pub const LISTEN: &str = "MESH_LISTEN";
    /// Its own sidecar's outbound address: every call to a peer goes there.
    pub const OUTBOUND: &str = "MESH_OUTBOUND";
    /// A folder for its data, shared by the service's replicas.
    pub const DATA_DIR: &str = "MESH_DATA_DIR";
    /// The service's PostgreSQL URL, when mesh.toml's `database` gives one (or
    /// the launcher's own environment has it); without it the shop's apps keep
    /// SQLite in `MESH_DATA_DIR`.
    pub const DATABASE_URL: &str = "MESH_DATABASE_URL";
}

/// The request header that carries the end user's id inside the mesh. Only
/// the gateway sets it, after verifying the user's token, and it always
/// overwrites whatever a client sent; services read it through the service
/// kit and let a user reach only their own data.
pub const END_USER_HEADER: &str = "x-mesh-user";

/// The whole mesh, as described by one `mesh.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    /// The file this was read from (for messages), or a name given by the caller.
    pub source: PathBuf,
    /// The version of `source` this was read from, taken before reading, so
    /// an edit racing the read still shows as a change to a follower.
    /// Unknown for a configuration parsed from text.
    pub source_stamp: crate::FileStamp,
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
    /// The edge, when the mesh has one; its sidecar is also in `clients`
    /// under [`crate::GATEWAY_WORKLOAD`].
    pub gateway: Option<crate::Gateway>,
    /// Replica `k` of a service listens on each of its ports plus `k` times this.
    pub replica_port_step: u16,
    /// How services' DNS `endpoints` are resolved.
    pub discovery: crate::Discovery,
    /// Retry limits for every destination.
    pub retry: RetryPolicy,
    pub telemetry: Telemetry,
}

/// One mesh service: an app on `app` and its sidecar's three listeners.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Where the app serves plain HTTP/2 (loopback only).
    pub app: SocketAddr,
    /// The sidecar's mutual-TLS listener that peers' sidecars call: a
    /// loopback address on one machine, the pod's address (or `0.0.0.0`) in a pod.
    pub inbound: SocketAddr,
    /// Where callers find the replicas instead of `inbound` plus the replica
    /// step: a DNS name and port (a Kubernetes headless Service), resolved
    /// and followed by every caller's sidecar.
    #[serde(default)]
    pub endpoints: Option<crate::DnsEndpoints>,
    /// The sidecar's plaintext listener for the app's own outgoing calls (loopback only).
    pub outbound: SocketAddr,
    /// The sidecar's `/live`, `/ready` and `/metrics`: loopback on one
    /// machine; the pod's address where a kubelet probes it and Prometheus
    /// scrapes it (it serves only reads).
    pub admin: SocketAddr,
    /// Fully qualified gRPC services the app serves, for example `shop.cart.v1.CartService`.
    pub grpc_services: Vec<String>,
    /// Who may call this service. `None` (key absent) lets any mesh identity
    /// call; an empty list lets nobody.
    #[serde(default)]
    pub allow: Option<Vec<AllowRule>>,
    /// How many copies of the app (each with its own sidecar) run. The
    /// addresses above are replica 0's; see `MeshConfig::replica_port_step`.
    #[serde(default = "one")]
    pub replicas: u16,
    /// Deadline cap for calls to this service: a caller's longer (or absent)
    /// `grpc-timeout` is cut to this.
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// Statuses, besides UNAVAILABLE, on which an idempotent call is retried.
    #[serde(default)]
    pub retry_on: Vec<crate::GrpcCode>,
    /// Per-method overrides, keyed `Method` or `pkg.Service/Method`.
    #[serde(default)]
    pub methods: BTreeMap<String, MethodPolicy>,
    /// Faults injected into calls to this service.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// How `mesh up` starts the app: the program and its arguments. Empty:
    /// the shop's built-in app of this name (`mesh serve <name>`) if there is
    /// one, else the app is started by someone else (an IDE, a debugger) and
    /// `mesh up` only starts its sidecar and waits for its health.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment for the app, on top of the launcher's own and the
    /// `MESH_*` variables it sets (see [`crate::app_env`]).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where the app starts, relative to mesh.toml's folder; that folder by default.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Where the service's contracts come from. Absent: the contracts
    /// compiled into Meshwork, if they define its `grpc_services`.
    #[serde(default)]
    pub contracts: Option<ContractSources>,
    /// When `mesh up` starts this service's app or sidecar again after it ended.
    #[serde(default)]
    pub restart: Restart,
    /// The PostgreSQL database the service's replicas share wherever they run,
    /// `postgres://user:password@host:5432/name`; `mesh up` gives it to the app
    /// as [`app_env::DATABASE_URL`]. Absent: SQLite in the state folder.
    #[serde(default)]
    pub database: Option<DatabaseUrl>,
}

/// A database URL from mesh.toml. Its `Debug` leaves the URL out, since it may
/// hold a password, so a printed config never shows one.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

/// The sources of a service's contracts (`[services.X.contracts]`): encoded
/// `FileDescriptorSet` files, `.proto` files compiled at start, or the app's
/// own gRPC server reflection. Paths are relative to mesh.toml's folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractSources {
    /// Files written by `protoc --descriptor_set_out`, `buf build` or `protox`.
    #[serde(default)]
    pub descriptor_sets: Vec<PathBuf>,
    /// `.proto` files, named as they are imported (relative to an `include` folder).
    #[serde(default)]
    pub protos: Vec<PathBuf>,
    /// Folders `protos` and their imports are found in; mesh.toml's folder when empty.
    #[serde(default)]
    pub include: Vec<PathBuf>,
    /// Ask the app (gRPC reflection v1, then v1alpha) once it is ready.
    #[serde(default)]
    pub reflection: bool,
}

impl ContractSources {
    /// Every file the contracts are read from (not the include folders).
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.descriptor_sets.iter().chain(&self.protos)
    }
}

/// A restart policy, as Kubernetes' `restartPolicy` and process supervisors
/// have it. The default is Kubernetes': always.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Whatever way it ended.
    #[default]
    Always,
    /// Only when it failed: a non-zero status or a signal.
    OnFailure,
    Never,
}

fn one() -> u16 {
    1
}

/// The four addresses of one replica of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    pub index: u16,
    pub app: SocketAddr,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
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
            && (self.methods.is_empty() || self.methods.iter().any(|m| method_matches(m, grpc_service, method)))
    }
}

impl Service {
    /// Replica `index`'s addresses: replica 0's ports shifted by `index * step`.
    /// `None` when a port would pass 65535 (validation refuses such a file).
    pub fn replica(&self, index: u16, step: u16) -> Option<Replica> {
        let shift = |addr: SocketAddr| -> Option<SocketAddr> {
            let port = u32::from(addr.port()) + u32::from(index) * u32::from(step);
            Some(SocketAddr::new(addr.ip(), u16::try_from(port).ok()?))
        };
        Some(Replica {
            index,
            app: shift(self.app)?,
            inbound: shift(self.inbound)?,
            outbound: shift(self.outbound)?,
            admin: shift(self.admin)?,
        })
    }

    /// Every replica's addresses, in index order.
    pub fn replica_set(&self, step: u16) -> impl Iterator<Item = Replica> + '_ {
        (0..self.replicas).filter_map(move |i| self.replica(i, step))
    }

    /// The override for `grpc_service`/`method`, if mesh.toml has one.
    /// A `pkg.Service/Method` key wins over a bare `Method` key.
    pub fn method_policy(&self, grpc_service: &str, method: &str) -> Option<&MethodPolicy> {
        let qualified = self
            .methods
            .iter()
            .find(|(k, _)| k.contains('/') && method_matches(k, grpc_service, method));
        qualified.or_else(|| self.methods.get_key_value(method)).map(|(_, p)| p)
    }

    /// The faults that apply to `grpc_service`/`method`.
    pub fn faults_for<'a>(&'a self, grpc_service: &'a str, method: &'a str) -> impl Iterator<Item = &'a Fault> + 'a {
        self.faults
            .iter()
            .filter(move |f| f.methods.is_empty() || f.methods.iter().any(|m| method_matches(m, grpc_service, method)))
    }

    /// Whether the policy lets `caller` call `grpc_service`/`method` on this service.
    pub fn permits(&self, caller: &str, grpc_service: &str, method: &str) -> bool {
        match &self.allow {
            None => true,
            Some(rules) => rules.iter().any(|r| r.permits(caller, grpc_service, method)),
        }
    }
}

/// What one sidecar needs to know about its own workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SidecarSpec<'a> {
    pub name: &'a str,
    /// Which replica of the service (0 for a client).
    pub replica: u16,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    /// The service behind the sidecar; `None` for a client.
    pub service: Option<&'a Service>,
    /// This replica's app and inbound addresses; `None` for a client.
    pub app: Option<SocketAddr>,
    pub inbound: Option<SocketAddr>,
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

    /// The sidecar of a workload (replica 0 of a service, or a client).
    pub fn sidecar(&self, name: &str) -> Option<SidecarSpec<'_>> {
        self.sidecar_replica(name, 0)
    }

    /// The sidecar of replica `replica` of a service (a client has only replica 0).
    pub fn sidecar_replica(&self, name: &str, replica: u16) -> Option<SidecarSpec<'_>> {
        if let Some((name, service)) = self.services.get_key_value(name) {
            if replica >= service.replicas {
                return None;
            }
            let r = service.replica(replica, self.replica_port_step)?;
            return Some(SidecarSpec {
                name,
                replica,
                outbound: r.outbound,
                admin: r.admin,
                service: Some(service),
                app: Some(r.app),
                inbound: Some(r.inbound),
            });
        }
        if replica != 0 {
            return None;
        }
        self.clients.get_key_value(name).map(|(name, client)| SidecarSpec {
            name,
            replica,
            outbound: client.outbound,
            admin: client.admin,
            service: None,
            app: None,
            inbound: None,
        })
    }

    /// Every sidecar of the mesh: each replica of each service, then each client.
    pub fn sidecars(&self) -> impl Iterator<Item = SidecarSpec<'_>> {
        let services = self
            .services
            .iter()
            .flat_map(move |(name, s)| (0..s.replicas).filter_map(move |r| self.sidecar_replica(name, r)));
        services.chain(self.clients.keys().filter_map(move |name| self.sidecar(name)))
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
