//! What the contracts say about each gRPC method, read once at start from
//! the descriptor set compiled into `meshwork-proto`: whether it may be sent
//! twice (`idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT) and whether its
//! request and response are single messages (which decides what the retry
//! layer may buffer).

use crate::map::FastMap;
use prost::Message;
use prost_types::{FileDescriptorSet, method_options::IdempotencyLevel};

/// One method's shape and idempotency, from its `.proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodShape {
    pub idempotent: bool,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

/// Every method of every contract, keyed by its request path
/// `/pkg.Service/Method`, so a lookup needs no string building.
#[derive(Debug, Default)]
pub struct Contracts {
    methods: FastMap<Box<str>, MethodShape>,
}

#[derive(Debug, thiserror::Error)]
#[error("the compiled-in contract descriptors do not decode: {0}")]
pub struct ContractsError(#[from] prost::DecodeError);

impl Contracts {
    /// The mesh's own contracts.
    pub fn compiled_in() -> Result<Self, ContractsError> {
        Self::decode(meshwork_proto::FILE_DESCRIPTOR_SET)
    }

    pub fn decode(descriptor_set: &[u8]) -> Result<Self, ContractsError> {
        let set = FileDescriptorSet::decode(descriptor_set)?;
        let mut methods = FastMap::default();
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    let level = method
                        .options
                        .as_ref()
                        .map_or(IdempotencyLevel::IdempotencyUnknown, |o| o.idempotency_level());
                    let shape = MethodShape {
                        idempotent: matches!(level, IdempotencyLevel::NoSideEffects | IdempotencyLevel::Idempotent),
                        client_streaming: method.client_streaming(),
                        server_streaming: method.server_streaming(),
                    };
                    let path = if package.is_empty() {
                        format!("/{}/{}", service.name(), method.name())
                    } else {
                        format!("/{package}.{}/{}", service.name(), method.name())
                    };
                    methods.insert(path.into_boxed_str(), shape);
                }
            }
        }
        Ok(Contracts { methods })
    }

    /// The shape of the method at `path` (`/pkg.Service/Method`).
    #[cfg(test)]
    pub fn get(&self, path: &str) -> Option<MethodShape> {
        self.methods.get(path).copied()
    }

    /// The request path of every method, `/pkg.Service/Method`.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(AsRef::as_ref)
    }

    /// Every method of `grpc_service`, as (method name, path, shape).
    pub fn methods_of<'a>(
        &'a self,
        grpc_service: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str, MethodShape)> + 'a {
        self.methods.iter().filter_map(move |(path, shape)| {
            let rest = path.strip_prefix('/')?.strip_prefix(grpc_service)?.strip_prefix('/')?;
            Some((rest, path.as_ref(), *shape))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_comes_from_the_contracts() {
        let c = Contracts::compiled_in().expect("descriptors");
        let get = c.get("/shop.catalog.v1.CatalogService/GetProduct").expect("GetProduct");
        assert!(get.idempotent, "NO_SIDE_EFFECTS is retryable");
        assert!(!get.client_streaming && !get.server_streaming);
        let checkout = c.get("/shop.cart.v1.CartService/Checkout").expect("Checkout");
        assert!(!checkout.idempotent, "Checkout has side effects");
        // The echo contract sets no idempotency at all.
        let unary = c.get("/meshwork.echo.v1.EchoService/Unary").expect("Unary");
        assert!(!unary.idempotent);
        let bidi = c.get("/meshwork.echo.v1.EchoService/BidiStream").expect("Bidi");
        assert!(bidi.client_streaming && bidi.server_streaming);
        assert_eq!(c.get("/nope.Service/Method"), None);
    }

    #[test]
    fn methods_of_a_service() {
        let c = Contracts::compiled_in().expect("descriptors");
        let mut names: Vec<_> = c
            .methods_of("meshwork.echo.v1.EchoService")
            .map(|(name, _, _)| name)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["BidiStream", "ClientStream", "ServerStream", "Unary"]);
    }
}
