//! The method table of the whole mesh: for each gRPC service a mesh service
//! serves, the contract it comes from, and for each method (by request path
//! `/pkg.Service/Method`) its idempotency, its shape and its descriptor.
//! Built from the compiled-in set and each service's own set; a service's
//! own set wins for the gRPC services it lists.

use std::{collections::BTreeMap, sync::Arc};

use meshwork_config::MeshConfig;
use prost_reflect::{MethodDescriptor, ServiceDescriptor};
use prost_types::method_options::IdempotencyLevel;

use crate::set::ContractSet;

/// The proto's `idempotency_level` for a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Unset: may have side effects, never replayed.
    Unknown,
    /// Sending it twice is harmless.
    Idempotent,
    /// Reads only: harmless to repeat, and safe to cache.
    NoSideEffects,
}

impl Idempotency {
    /// Whether a failed call may be sent again.
    pub fn retryable(self) -> bool {
        self != Idempotency::Unknown
    }
}

/// One method as its contract describes it.
#[derive(Debug, Clone)]
pub struct MethodContract {
    pub idempotency: Idempotency,
    pub client_streaming: bool,
    pub server_streaming: bool,
    /// Input and output messages, comments, options (`google.api.http`).
    pub descriptor: MethodDescriptor,
}

impl MethodContract {
    fn of(descriptor: MethodDescriptor) -> Self {
        let level = descriptor.method_descriptor_proto().options.as_ref().map_or(
            IdempotencyLevel::IdempotencyUnknown,
            prost_types::MethodOptions::idempotency_level,
        );
        MethodContract {
            idempotency: match level {
                IdempotencyLevel::NoSideEffects => Idempotency::NoSideEffects,
                IdempotencyLevel::Idempotent => Idempotency::Idempotent,
                IdempotencyLevel::IdempotencyUnknown => Idempotency::Unknown,
            },
            client_streaming: descriptor.is_client_streaming(),
            server_streaming: descriptor.is_server_streaming(),
            descriptor,
        }
    }
}

/// Every known gRPC service and method of the mesh.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// By `pkg.Service`: its descriptor and the origin of its contract.
    services: BTreeMap<Arc<str>, (ServiceDescriptor, Arc<str>)>,
    /// By request path, `/pkg.Service/Method`.
    methods: BTreeMap<Box<str>, MethodContract>,
}

impl Registry {
    /// The registry of `config`: each mesh service's listed gRPC services
    /// from its own set in `declared` (by mesh service name) when it has
    /// one, else from `compiled`. The compiled-in set's other services (the
    /// shop's, the echo's) are known too, for callers outside mesh.toml.
    pub fn build(config: &MeshConfig, compiled: &ContractSet, declared: &BTreeMap<String, Arc<ContractSet>>) -> Self {
        let mut registry = Registry::default();
        for service in compiled.pool().services() {
            registry.insert(service, compiled.origin());
        }
        for (name, service) in &config.services {
            let Some(set) = declared.get(name) else { continue };
            for grpc_service in &service.grpc_services {
                if let Some(descriptor) = set.service(grpc_service) {
                    registry.insert(descriptor, set.origin());
                }
            }
        }
        registry
    }

    fn insert(&mut self, service: ServiceDescriptor, origin: &str) {
        let full: Arc<str> = service.full_name().into();
        self.methods.retain(|path, _| !in_service(path, &full));
        for method in service.methods() {
            let path = format!("/{full}/{}", method.name());
            self.methods.insert(path.into_boxed_str(), MethodContract::of(method));
        }
        self.services.insert(full, (service, origin.into()));
    }

    /// The method at `path` (`/pkg.Service/Method`).
    pub fn method(&self, path: &str) -> Option<&MethodContract> {
        self.methods.get(path)
    }

    /// Every method, as (request path, contract).
    pub fn methods(&self) -> impl Iterator<Item = (&str, &MethodContract)> {
        self.methods.iter().map(|(path, m)| (path.as_ref(), m))
    }

    /// Whether a contract describes `grpc_service`.
    pub fn knows(&self, grpc_service: &str) -> bool {
        self.services.contains_key(grpc_service)
    }

    /// The descriptor of `grpc_service` and where its contract came from.
    pub fn service(&self, grpc_service: &str) -> Option<(&ServiceDescriptor, &str)> {
        self.services.get(grpc_service).map(|(d, origin)| (d, origin.as_ref()))
    }

    /// Every method of `grpc_service`, as (method name, path, contract).
    pub fn methods_of<'a>(
        &'a self,
        grpc_service: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str, &'a MethodContract)> + 'a {
        self.methods
            .iter()
            .filter(move |(path, _)| in_service(path, grpc_service))
            .map(move |(path, m)| (&path[grpc_service.len() + 2..], path.as_ref(), m))
    }
}

fn in_service(path: &str, grpc_service: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(grpc_service))
        .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled() -> Registry {
        let config = MeshConfig::parse(
            r#"
            trust_domain = "t.local"
            [services.catalog]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:2"
            outbound = "127.0.0.1:3"
            admin = "127.0.0.1:4"
            grpc_services = ["shop.catalog.v1.CatalogService"]
            "#,
            std::path::Path::new("mesh.toml"),
        )
        .expect("config");
        Registry::build(&config, &ContractSet::compiled_in(), &BTreeMap::new())
    }

    #[test]
    fn idempotency_and_shapes_come_from_the_contracts() {
        let r = compiled();
        let get = r
            .method("/shop.catalog.v1.CatalogService/GetProduct")
            .expect("GetProduct");
        assert_eq!(get.idempotency, Idempotency::NoSideEffects);
        assert!(!get.client_streaming && !get.server_streaming);
        let checkout = r.method("/shop.cart.v1.CartService/Checkout").expect("Checkout");
        assert!(!checkout.idempotency.retryable());
        let bidi = r.method("/meshwork.echo.v1.EchoService/BidiStream").expect("Bidi");
        assert!(bidi.client_streaming && bidi.server_streaming);
        assert!(r.method("/nope.Service/Method").is_none());
        assert!(r.knows("shop.users.v1.UserService"));
    }

    #[test]
    fn methods_of_a_service() {
        let r = compiled();
        let names: Vec<_> = r
            .methods_of("meshwork.echo.v1.EchoService")
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(names, ["BidiStream", "ClientStream", "ServerStream", "Unary"]);
        assert_eq!(
            r.methods_of("meshwork.echo.v1.Echo").count(),
            0,
            "a prefix is not a service"
        );
    }
}
