//! The contract registry: what every service of the mesh offers, read from
//! the contracts compiled into Meshwork, from descriptor files, from `.proto`
//! files compiled at start (protox, no `protoc`), or from an app's own gRPC
//! reflection. It is the one place the sidecars (retries, deadlines, metric
//! and span names, faults, authorization) and the edge learn which methods
//! exist, their shapes and idempotency, and their message descriptors;
//! nothing else lists methods.
//!
//! - [`ContractSet`]: the descriptors of one source.
//! - [`Registry`]: the method table built from the compiled-in set and each
//!   service's own set.
//! - [`Mesh`]: mesh.toml and the registry it names, checked together
//!   ([`check`]), followed while running ([`follow`]).

mod check;
pub mod dynamic;
mod follow;
mod mesh;
pub mod reflection;
mod registry;
mod set;

pub use check::check;
pub use follow::follow;
pub use mesh::Mesh;
pub use registry::{Idempotency, MethodContract, Registry};
pub use set::{ContractSet, SetError};
