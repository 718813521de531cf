//! Shared fixtures for the integration tests.

// In-process sidecar fixtures (sidecar_pair.rs, mtls.rs).
pub mod certs;
pub mod echo;
pub mod http;
pub mod mesh;
pub mod tls;

// The real `mesh` binary as a child process (mesh_cli.rs and other whole-mesh tests).
pub mod mesh_process;

// A helper program (Python client, browser driver) run with a time limit.
pub mod child;

// A raw HTTP/1.1 client for the gateway (gateway.rs, gateway_auth.rs).
pub mod rest;
// The shop's storage, SQLite or a PostgreSQL server of the tests' own (shop_*.rs).
pub mod postgres;

// A test OTLP collector (tracing.rs).
pub mod otlp;

// A replicated service with scriptable apps (balancing.rs, retries.rs).
pub mod replicas;
