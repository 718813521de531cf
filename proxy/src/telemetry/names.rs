//! The names telemetry puts on a call, with bounded cardinality and no
//! allocation per call: methods come from the contract registry (plus
//! health and reflection), peers from the mesh configuration; anything else
//! is `unknown`. For a gRPC service of mesh.toml that no contract describes,
//! method names are taken from the paths its calls use, up to
//! [`MAX_LEARNED`] of them, so a caller cannot grow the metrics without
//! bound. Every name is interned once as a `&'static str`, so labels and
//! span attributes copy a pointer, and metric families hash a pointer-sized
//! string. The table follows the registry through an `ArcSwap`: a call
//! reads it without a lock.

use std::{collections::HashSet, sync::Arc};

use crate::{
    grpc::GrpcPath,
    map::{FastMap, FastSet},
    outbound::RouteTable,
};
use arc_swap::ArcSwap;
use http::Uri;
use meshwork_config::MeshConfig;
use meshwork_contracts::Mesh;
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

/// Most method names a sidecar takes from paths of services without contracts.
pub const MAX_LEARNED: usize = 256;

/// The method table at one moment.
#[derive(Debug, Default, Clone)]
struct MethodTable {
    /// By request path, `/pkg.Service/Method`.
    methods: FastMap<&'static str, Method>,
    /// gRPC services of mesh.toml that no contract describes: their method
    /// names are learned from the paths of their calls.
    learnable: FastSet<&'static str>,
    /// How many names were learned so far.
    learned: usize,
}

#[derive(Debug)]
pub struct Names {
    methods: ArcSwap<MethodTable>,
    /// Serializes learning (rare: once per new name, at most `MAX_LEARNED` times).
    learning: Mutex<()>,
    /// The mesh service a call is for, by the outbound route's rule.
    destinations: RouteTable<&'static str>,
    /// Every mesh workload (service or client) name.
    workloads: FastSet<&'static str>,
}

impl Names {
    pub fn new(mesh: &Mesh) -> Self {
        let config = &*mesh.config;
        let names = Names {
            methods: ArcSwap::from_pointee(MethodTable::default()),
            learning: Mutex::new(()),
            destinations: RouteTable::new(config, |name| Some(intern(name))),
            workloads: workloads(config),
        };
        names.update(mesh);
        names
    }

    /// Follows a new snapshot of the contracts: their methods replace the
    /// table's; names learned for services still without contracts stay.
    pub fn update(&self, mesh: &Mesh) {
        let _learning = self.learning.lock();
        let before = self.methods.load();
        let mut table = MethodTable::default();
        let contract_paths = mesh.registry.methods().map(|(path, _)| path);
        for path in contract_paths.chain(STANDARD_METHODS.iter().copied()) {
            if let Some(method) = method_of(path) {
                table.methods.insert(intern(path), method);
            }
        }
        let services = mesh.config.services.values().flat_map(|s| &s.grpc_services);
        table.learnable = services
            .filter(|g| !mesh.registry.knows(g))
            .map(|g| intern(g))
            .collect();
        for (path, method) in &before.methods {
            if table.learnable.contains(method.service) && before.learnable.contains(method.service) {
                table.methods.insert(path, *method);
                table.learned += 1;
            }
        }
        self.methods.store(Arc::new(table));
    }

    /// The method at `path`, or [`Method::UNKNOWN`].
    pub fn method(&self, path: &str) -> Method {
        let table = self.methods.load();
        if let Some(method) = table.methods.get(path) {
            return *method;
        }
        let learnable =
            table.learned < MAX_LEARNED && GrpcPath::parse(path).is_some_and(|p| table.learnable.contains(p.service));
        if learnable { self.learn(path) } else { Method::UNKNOWN }
    }

    /// Adds `path`, of a service without contracts, to the table.
    #[cold]
    fn learn(&self, path: &str) -> Method {
        let _learning = self.learning.lock();
        let table = self.methods.load();
        if let Some(method) = table.methods.get(path) {
            return *method;
        }
        let Some(method) = method_of(path).filter(|_| table.learned < MAX_LEARNED) else {
            return Method::UNKNOWN;
        };
        let mut next = MethodTable::clone(&table);
        next.methods.insert(intern(path), method);
        next.learned += 1;
        self.methods.store(Arc::new(next));
        method
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

/// `path`'s parts, interned.
fn method_of(path: &str) -> Option<Method> {
    let GrpcPath { service, .. } = GrpcPath::parse(path)?;
    let full = intern(&path[1..]);
    Some(Method {
        full,
        service: &full[..service.len()],
        method: &full[service.len() + 1..],
    })
}

fn workloads(config: &MeshConfig) -> FastSet<&'static str> {
    let names = config.services.keys().chain(config.clients.keys());
    names.map(|name| intern(name)).collect()
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
        Names::new(&Mesh::new(Arc::new(config)).expect("contracts"))
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

    /// A service no contract describes: names come from its paths, up to
    /// the bound; other paths stay `unknown`.
    #[test]
    fn methods_of_services_without_contracts_are_learned_within_a_bound() {
        let config = MeshConfig::parse(
            r#"
            trust_domain = "t.local"
            [services.reviews]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:2"
            outbound = "127.0.0.1:3"
            admin = "127.0.0.1:4"
            grpc_services = ["reviews.v1.ReviewService"]
            "#,
            std::path::Path::new("mesh.toml"),
        )
        .expect("config");
        let n = Names::new(&Mesh::new(Arc::new(config)).expect("contracts"));
        let get = n.method("/reviews.v1.ReviewService/GetReview");
        assert_eq!((get.service, get.method), ("reviews.v1.ReviewService", "GetReview"));
        assert!(std::ptr::eq(
            get.full,
            n.method("/reviews.v1.ReviewService/GetReview").full
        ));
        assert_eq!(
            n.method("/other.v1.Other/Get"),
            Method::UNKNOWN,
            "not a service of mesh.toml"
        );
        for i in 1..MAX_LEARNED {
            assert_ne!(n.method(&format!("/reviews.v1.ReviewService/M{i}")), Method::UNKNOWN);
        }
        assert_eq!(n.method("/reviews.v1.ReviewService/OneTooMany"), Method::UNKNOWN);
        assert_eq!(n.method("/reviews.v1.ReviewService/GetReview").method, "GetReview");
    }

    #[test]
    fn interning_returns_one_pointer_per_string() {
        let a = intern(&String::from("same"));
        let b = intern("same");
        assert!(std::ptr::eq(a, b));
    }
}
