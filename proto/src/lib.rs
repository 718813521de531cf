//! The mesh's protobuf contracts as Rust types, tonic clients and tonic servers.
//!
//! Every contract also travels as an encoded `FileDescriptorSet`
//! ([`FILE_DESCRIPTOR_SET`]): the services serve it through gRPC reflection and
//! the proxy reads each method's `idempotency_level` from it.

/// Encoded `google.protobuf.FileDescriptorSet` of every contract in this crate,
/// including the well-known types they import.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// `google.api.HttpRule`, the REST mapping the gateway reads from each
/// method's `option (google.api.http)`.
pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

pub mod shop {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("shop.common.v1");
        }
    }
    pub mod users {
        pub mod v1 {
            tonic::include_proto!("shop.users.v1");
        }
    }
    pub mod catalog {
        pub mod v1 {
            tonic::include_proto!("shop.catalog.v1");
        }
    }
    pub mod cart {
        pub mod v1 {
            tonic::include_proto!("shop.cart.v1");
        }
    }
    pub mod payments {
        pub mod v1 {
            tonic::include_proto!("shop.payments.v1");
        }
    }
}

pub mod meshwork {
    pub mod echo {
        pub mod v1 {
            tonic::include_proto!("meshwork.echo.v1");
        }
    }
}

pub use meshwork::echo::v1 as echo;
pub use shop::{
    cart::v1 as cart, catalog::v1 as catalog, common::v1 as common, payments::v1 as payments, users::v1 as users,
};

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    #[test]
    fn descriptor_set_holds_every_service() {
        let set = FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| format!("{}.{}", f.package(), s.name())))
            .collect();
        for want in [
            "shop.users.v1.UserService",
            "shop.catalog.v1.CatalogService",
            "shop.cart.v1.CartService",
            "shop.payments.v1.PaymentService",
            "meshwork.echo.v1.EchoService",
        ] {
            assert!(services.iter().any(|s| s == want), "{want} missing from {services:?}");
        }
    }
}
