//! Shared fixtures for the integration tests.

// In-process sidecar fixtures (sidecar_pair.rs, mtls.rs).
pub mod certs;
pub mod echo;
pub mod http;
pub mod mesh;
pub mod tls;
