//! Parsing a gRPC request path, `/package.Service/Method`, without allocating.

/// The two halves of a gRPC path, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcPath<'a> {
    /// Fully qualified service, for example `shop.cart.v1.CartService`.
    pub service: &'a str,
    pub method: &'a str,
}

impl<'a> GrpcPath<'a> {
    /// `None` unless `path` is exactly `/<service>/<method>` with both non-empty.
    pub fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix('/')?;
        let (service, method) = rest.split_once('/')?;
        if service.is_empty() || method.is_empty() || method.contains('/') {
            return None;
        }
        Some(GrpcPath { service, method })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_and_method() {
        assert_eq!(
            GrpcPath::parse("/shop.cart.v1.CartService/AddItem"),
            Some(GrpcPath {
                service: "shop.cart.v1.CartService",
                method: "AddItem"
            })
        );
        assert_eq!(
            GrpcPath::parse("/grpc.health.v1.Health/Check").map(|p| p.service),
            Some("grpc.health.v1.Health")
        );
    }

    #[test]
    fn refuses_other_paths() {
        for bad in ["", "/", "//", "/a", "/a/", "//m", "a/b", "/a/b/c", "/a/b/"] {
            assert_eq!(GrpcPath::parse(bad), None, "{bad:?}");
        }
    }
}
