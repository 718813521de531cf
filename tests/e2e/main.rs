//! Meshwork's integration tests: real processes, real sockets, real TLS.

mod mesh_cli;
mod mtls;
mod sidecar_pair;
mod support;
