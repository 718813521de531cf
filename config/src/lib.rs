//! `mesh.toml`, the one file that describes a mesh: its trust domain, its
//! services with their addresses and gRPC services, its clients, and the
//! authorization policy. A bad file is refused with the file, the key and the
//! reason ([`ConfigError`]).

mod discovery;
mod error;
mod gateway;
mod model;
mod parse;
mod policy;
mod stamp;

pub use discovery::{Discovery, DnsEndpoints};
pub use error::ConfigError;
pub use gateway::{
    Auth, CacheRule, CacheStore, Cors, GATEWAY_WORKLOAD, Gateway, GatewaySidecar, GatewayTls, Limits, Mcp,
    OnStoreError, Rate, RateKey, RateLimit, RateLimitStore, gateway_pattern_matches,
};
pub use model::{
    AllowRule, Client, ContractSources, DatabaseUrl, END_USER_HEADER, MeshConfig, Replica, Restart, Service,
    SidecarSpec, app_env, spiffe_id,
};
pub use policy::{Abort, Delay, Fault, GrpcCode, MethodPolicy, RetryPolicy, Telemetry, method_matches};
pub use stamp::FileStamp;
