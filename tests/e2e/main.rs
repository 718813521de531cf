//! Meshwork's integration tests: real processes, real sockets, real TLS.

mod balancing;
mod bench;
mod errors;
mod mesh_cli;
mod metrics;
mod mtls;
mod retries;
mod shop_resilience;
mod sidecar_pair;
mod support;
mod tracing;
