//! The names telemetry puts on a call, with bounded cardinality and no
//! allocation per call: methods come from the contracts (the descriptor set
//! compiled into `meshwork-proto`, plus health and reflection), peers from
//! the mesh configuration; anything else is `unknown`. Every name is
//! interned once as a `&'static str`, so labels and span attributes copy a
//! pointer, and metric families hash a pointer-sized string.

use std::collections::HashSet;

use crate::{
    grpc::{Contracts, GrpcPath},
    map::{FastMap, FastSet},
    outbound::RouteTable,
};
use http::Uri;
use meshwork_config::MeshConfig;
use parking_lot::Mutex;

/// What stands for a method, service or peer the mesh does not know: a path
/// from outside must not be able to grow the metrics without bound.
pub const UNKNOWN: &str = "unknown";

/// Methods every app serves beside its contracts.
const STANDARD_METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// `s` as a string that lives for the whole process, the same pointer for
/// equal strings. Only for bounded sets (contract names, workload names):
/// each distinct string is kept once and never freed, which is what lets a
/// label be a plain `&'static str`; sidecars rebuilt in tests reuse them.
pub fn intern(s: &str) -> &'static str {
    static INTERNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut set = INTERNED.lock();
    let set = set.get_or_insert_with(HashSet::new);
    if let Some(existing) = set.get(s) {
        return existing;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// A known method, by its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// `pkg.Service/Method`: the span name and the `method` label.
    pub full: &'static str,
    /// `pkg.Service` (`rpc.service`).
    pub service: &'static str,
    /// `Method` (`rpc.method`).
    pub method: &'static str,
}

impl Method {
    pub const UNKNOWN: Method = Method {
        full: UNKNOWN,
        service: UNKNOWN,
        method: UNKNOWN,
    };
}

#[derive(Debug)]
pub struct Names {
    /// By request path, `/pkg.Service/Method`.
    methods: FastMap<&'static str, Method>,
    /// The mesh service a call is for, by the outbound route's rule.
    destinations: RouteTable<&'static str>,
    /// Every mesh workload (service or client) name.
    workloads: FastSet<&'static str>,
}

impl Names {
    pub fn new(config: &MeshConfig) -> Self {
        let mut names = Names {
            methods: FastMap::default(),
            destinations: RouteTable::new(config, |name| Some(intern(name))),
            workloads: FastSet::default(),
        };
        let contracts = Contracts::compiled_in().unwrap_or_else(|error| {
            // Compiled in, so it decodes; if not, calls still go through,
            // only labelled `unknown`.
            tracing::error!(%error, "methods will be labelled unknown");
            Contracts::default()
        });
        for path in contracts.paths().chain(STANDARD_METHODS.iter().copied()) {
            if let Some(GrpcPath { service, .. }) = GrpcPath::parse(path) {
                let full = intern(&path[1..]);
                let method = Method {
                    full,
                    service: &full[..service.len()],
                    method: &full[service.len() + 1..],
                };
                names.methods.insert(intern(path), method);
            }
        }
        let workloads = config.services.keys().chain(config.clients.keys());
        names.workloads.extend(workloads.map(|name| intern(name)));
        names
    }

    /// The method at `path`, or [`Method::UNKNOWN`].
    pub fn method(&self, path: &str) -> Method {
        self.methods.get(path).copied().unwrap_or(Method::UNKNOWN)
    }

    /// The mesh service a call is for, as the outbound route decides it
    /// (a call it cannot route is `unknown`).
    pub fn destination(&self, uri: &Uri) -> &'static str {
        self.destinations.get(uri).unwrap_or(UNKNOWN)
    }

    /// `name` if it is a workload of the mesh, else `unknown`.
    pub fn workload(&self, name: &str) -> &'static str {
        self.workloads.get(name).copied().unwrap_or(UNKNOWN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let config = MeshConfig::parse(
            r#"
            trust_domain = "t.local"
            [services.catalog]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:2"
            outbound = "127.0.0.1:3"
            admin = "127.0.0.1:4"
            grpc_services = ["shop.catalog.v1.CatalogService"]
            [clients.demo]
            outbound = "127.0.0.1:20"
            admin = "127.0.0.1:21"
            "#,
            std::path::Path::new("mesh.toml"),
        )
        .expect("config");
        Names::new(&config)
    }

    #[test]
    fn methods_from_contracts_and_standard_services() {
        let n = names();
        let get = n.method("/shop.catalog.v1.CatalogService/GetProduct");
        assert_eq!(get.full, "shop.catalog.v1.CatalogService/GetProduct");
        assert_eq!(get.service, "shop.catalog.v1.CatalogService");
        assert_eq!(get.method, "GetProduct");
        assert_eq!(n.method("/grpc.health.v1.Health/Check").method, "Check");
        assert_eq!(n.method("/shop.catalog.v1.CatalogService/Nope"), Method::UNKNOWN);
        assert_eq!(n.method("/random"), Method::UNKNOWN);
    }

    #[test]
    fn destinations_by_path_then_authority() {
        let n = names();
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        assert_eq!(
            n.destination(&uri("http://x/shop.catalog.v1.CatalogService/GetProduct")),
            "catalog"
        );
        assert_eq!(
            n.destination(&uri("http://catalog/grpc.health.v1.Health/Check")),
            "catalog"
        );
        assert_eq!(
            n.destination(&uri("http://127.0.0.1:9/grpc.health.v1.Health/Check")),
            UNKNOWN
        );
        // A client is no destination: the route does not send calls there.
        assert_eq!(n.destination(&uri("http://demo/grpc.health.v1.Health/Check")), UNKNOWN);
        assert_eq!(n.workload("demo"), "demo");
        assert_eq!(n.workload("mallory"), UNKNOWN);
    }

    #[test]
    fn interning_returns_one_pointer_per_string() {
        let a = intern(&String::from("same"));
        let b = intern("same");
        assert!(std::ptr::eq(a, b));
    }
}
