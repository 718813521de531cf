//! The `[gateway]` section: the mesh's edge. Where it listens, how it speaks
//! TLS, who may call it from a browser (CORS), the bounds on what a client
//! may send, and which calls need a token. The gateway reaches services
//! through a sidecar of its own, an outbound-only one like a client's, whose
//! identity is `spiffe://<trust-domain>/service/gateway`.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

/// The gateway's name as a workload: its identity and the `from` of the
/// allow rules that let it call services.
pub const GATEWAY_WORKLOAD: &str = "gateway";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// The one public port: REST/JSON, gRPC-Web, gRPC and the storefront,
    /// over HTTP/1.1 and HTTP/2.
    pub listen: SocketAddr,
    /// `/live`, `/ready` and `/metrics` of the gateway itself (loopback).
    pub admin: SocketAddr,
    /// Its sidecar: the outbound port it calls services through, and that
    /// sidecar's admin port.
    pub sidecar: GatewaySidecar,
    /// TLS on `listen` with this certificate chain and key (PEM); plaintext
    /// (HTTP/2 by prior knowledge, or HTTP/1.1) when absent.
    #[serde(default)]
    pub tls: Option<GatewayTls>,
    #[serde(default)]
    pub cors: Cors,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub mcp: Mcp,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySidecar {
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayTls {
    /// Resolved against mesh.toml's folder.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Cross-origin calls from browsers; none are allowed when `origins` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Exact origins (`https://shop.example`), or `"*"` for any.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Request headers a page may send besides the CORS-safelisted ones.
    #[serde(default = "default_cors_headers")]
    pub headers: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    #[serde(default = "default_cors_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for Cors {
    fn default() -> Self {
        Cors {
            origins: Vec::new(),
            headers: default_cors_headers(),
            max_age: default_cors_max_age(),
        }
    }
}

fn default_cors_headers() -> Vec<String> {
    [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
    ]
    .map(String::from)
    .to_vec()
}

fn default_cors_max_age() -> Duration {
    Duration::from_secs(600)
}

/// What one client may send, and how long it may take. The defaults suit a
/// public shop API; BENCHMARKS.md and the README list them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Total size of a request's headers (431 above it).
    pub max_header_bytes: usize,
    /// Number of request headers (431 above it).
    pub max_headers: usize,
    /// A request body (413 above it).
    pub max_body_bytes: usize,
    /// Time for a client to send its request headers (408, then closed).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Deadline of one call when the client sets none (`grpc-timeout` wins when shorter).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open client connections; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_streams: 100,
        }
    }
}

/// Who is calling: the users service's access tokens, verified at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Methods anyone may call without a token (`Service/Method` or
    /// `pkg.Service/Method`); every other published method needs one.
    pub public: Vec<String>,
    /// Methods that need a role in the token's `roles` claim, by method.
    pub roles: BTreeMap<String, String>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            issuer: "meshwork-users".into(),
            audience: "meshwork".into(),
            leeway: Duration::from_secs(30),
            public: Vec::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// `[gateway.mcp]`: the published methods as MCP tools for agents, at `/mcp`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mcp {
    /// Serve `/mcp` and its protected resource metadata.
    pub enabled: bool,
    /// The methods offered as tools (`pkg.Service/Method`, `Service/Method`,
    /// `pkg.Service` or a method name); absent: every published method with
    /// a REST route.
    pub tools: Option<Vec<String>>,
    /// Methods marked `destructiveHint` besides those mapped to HTTP DELETE.
    pub destructive: Vec<String>,
    /// `Origin` values a browser page may call `/mcp` from; absent: the
    /// gateway's CORS origins. A request from any other origin gets 403.
    pub origins: Option<Vec<String>>,
    /// The resource's canonical URI (RFC 9728 `resource`, and the audience
    /// agents ask tokens for); absent: `http(s)://<listen>/mcp`.
    pub resource: Option<String>,
    /// The authorization servers the protected resource metadata names.
    pub authorization_servers: Vec<String>,
    /// A server-streaming tool collects messages for at most this long...
    #[serde(with = "humantime_serde")]
    pub stream_window: Duration,
    /// ... and at most this many, then answers with what it has.
    pub stream_messages: usize,
}

impl Default for Mcp {
    fn default() -> Self {
        Mcp {
            enabled: true,
            tools: None,
            destructive: Vec::new(),
            origins: None,
            resource: None,
            authorization_servers: Vec::new(),
            stream_window: Duration::from_secs(5),
            stream_messages: 100,
        }
    }
}
