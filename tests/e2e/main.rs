//! Meshwork's integration tests: real processes, real sockets, real TLS.

mod balancing;
mod bench;
mod contracts;
mod dashboard;
mod end_user;
mod errors;
mod gateway;
mod gateway_auth;
mod gateway_policy;
mod k8s_manifests;
mod mcp;
mod mesh_cli;
mod metrics;
mod mtls;
mod pods;
mod retries;
mod shop_books;
mod shop_races;
mod shop_resilience;
mod shop_restarts;
mod sidecar_pair;
mod storefront;
mod support;
mod tracing;
mod users_replicas;
