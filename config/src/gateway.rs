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
    /// `[[gateway.rate_limits]]`: calls per user, API key, client address
    /// or in all, per method; every rule that names a call applies.
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    /// Where the rate limits' counters live: this process (the default) or
    /// a Redis that the gateway's replicas share.
    #[serde(default)]
    pub rate_limit_store: RateLimitStore,
    /// `[[gateway.cache]]`: responses of side-effect-free methods kept for a while.
    #[serde(default)]
    pub cache: Vec<CacheRule>,
    #[serde(default)]
    pub cache_store: CacheStore,
    /// Gateway processes `mesh up` starts. Replica `i` listens on `listen`
    /// and `admin` moved by `i × replica_port_step`; all share one sidecar,
    /// and share rate-limit counters when `rate_limit_store.redis` is set.
    #[serde(default = "one")]
    pub replicas: u16,
}

fn one() -> u16 {
    1
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
    /// The authorization servers the protected resource metadata names;
    /// empty: the gateway itself (its OAuth 2.1 endpoints).
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
/// One rate limit: `rate` calls (with `burst` at once) to `methods`, counted
/// per `key`. The algorithm is GCRA (a leaky bucket without a timer).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// The policy's name in the `RateLimit-Policy` and `RateLimit` headers;
    /// `limit<N>` (its place in the list) when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// `pkg.Service/Method` or `pkg.Service` (all of its methods).
    pub methods: Vec<String>,
    pub key: RateKey,
    /// For `key = "api_key"`: the request header that carries the key.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// `N/s`, `N/m`, `N/h`, or `N/<duration>` such as `5/10s`.
    pub rate: String,
    /// Calls allowed at once after a quiet spell; the rate's N when absent.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_api_key_header() -> String {
    "x-api-key".into()
}

/// Whom a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// The verified user; a call without a token counts by its client address.
    User,
    /// The API key header; a call without one counts by its client address.
    ApiKey,
    /// The client's IP address.
    Client,
    /// Everyone together.
    Global,
}

/// A parsed `rate`: `count` calls per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl RateLimit {
    /// The `rate` parsed (the config check has refused one that does not parse).
    pub fn parsed_rate(&self) -> Result<Rate, String> {
        parse_rate(&self.rate)
    }

    /// `burst`, or the rate's count.
    pub fn burst_or_default(&self) -> Result<u32, String> {
        Ok(self.burst.unwrap_or(self.parsed_rate()?.count))
    }
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    let wrong = || format!("'{text}' is not a rate such as \"10/s\", \"100/m\", \"1000/h\" or \"5/10s\"");
    let (count, per) = text.split_once('/').ok_or_else(wrong)?;
    let count: u32 = count.trim().parse().map_err(|_| wrong())?;
    let period = match per.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => humantime::parse_duration(other).map_err(|_| wrong())?,
    };
    if count == 0 || period.is_zero() {
        return Err(format!(
            "'{text}' allows nothing; a rate needs at least one call per period longer than 0s"
        ));
    }
    Ok(Rate { count, period })
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitStore {
    /// `redis://host:port[/db]` shared by the replicas; `"local"` for a
    /// redis-server that `mesh up` starts (at `local_port`); absent: in memory.
    #[serde(default)]
    pub redis: Option<String>,
    /// The port of the redis-server `mesh up` starts for `redis = "local"`.
    #[serde(default = "default_local_redis_port")]
    pub local_port: u16,
    /// What a call gets while Redis cannot be reached.
    #[serde(default)]
    pub on_error: OnStoreError,
}

fn default_local_redis_port() -> u16 {
    6379
}

impl RateLimitStore {
    /// The Redis URL to connect to, if the counters are shared.
    pub fn redis_url(&self) -> Option<String> {
        match self.redis.as_deref()? {
            "local" => Some(format!("redis://127.0.0.1:{}", self.local_port)),
            url => Some(url.to_string()),
        }
    }
}

/// Fail open (the call proceeds, unlimited) or closed (503) without Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    #[default]
    Open,
    Closed,
}

/// Responses of `methods` kept for `ttl`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// `pkg.Service/Method` or `pkg.Service`; each must be NO_SIDE_EFFECTS and unary.
    pub methods: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long past its TTL an answer may still stand in when the method
    /// fails (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN: RFC 5861's
    /// stale-if-error); 0, the default: never.
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Duration,
}

/// The response cache's bound.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheStore {
    /// Bytes held at most (keys and responses); least useful entries go first.
    pub max_bytes: u64,
}

impl Default for CacheStore {
    fn default() -> Self {
        CacheStore {
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Gateway {
    /// Replica `index`'s public and admin addresses.
    pub fn replica(&self, index: u16, step: u16) -> Option<(SocketAddr, SocketAddr)> {
        let shift = |addr: SocketAddr| -> Option<SocketAddr> {
            let port = u32::from(addr.port()) + u32::from(index) * u32::from(step);
            Some(SocketAddr::new(addr.ip(), u16::try_from(port).ok()?))
        };
        Some((shift(self.listen)?, shift(self.admin)?))
    }

    /// The rate limit and cache sections, checked for form (method names
    /// and side effects are checked against the contracts elsewhere).
    pub(crate) fn check_policy(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::BTreeSet::new();
        for (i, limit) in self.rate_limits.iter().enumerate() {
            let key = |field: &str| format!("gateway.rate_limits[{i}].{field}");
            if limit.methods.is_empty() {
                return Err((key("methods"), "names no method".into()));
            }
            for (j, method) in limit.methods.iter().enumerate() {
                check_form(method).map_err(|reason| (format!("gateway.rate_limits[{i}].methods[{j}]"), reason))?;
            }
            limit.parsed_rate().map_err(|reason| (key("rate"), reason))?;
            if limit.burst == Some(0) {
                return Err((key("burst"), "must be at least 1".into()));
            }
            if limit.key == RateKey::ApiKey && http::HeaderName::from_bytes(limit.header.as_bytes()).is_err() {
                return Err((key("header"), format!("'{}' is not a header name", limit.header)));
            }
            let name = limit.name.clone().unwrap_or_else(|| format!("limit{i}"));
            let token = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if !token {
                return Err((
                    key("name"),
                    format!("'{name}' must be letters, digits, '-', '_', '.' or ':'"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err((key("name"), format!("'{name}' names another rate limit too")));
            }
        }
        if let Some(url) = &self.rate_limit_store.redis
            && url != "local"
            && !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"))
        {
            return Err((
                "gateway.rate_limit_store.redis".into(),
                format!("'{url}' is not a Redis URL such as \"redis://127.0.0.1:6379\", or \"local\""),
            ));
        }
        for (i, rule) in self.cache.iter().enumerate() {
            if rule.methods.is_empty() {
                return Err((format!("gateway.cache[{i}].methods"), "names no method".into()));
            }
            for (j, method) in rule.methods.iter().enumerate() {
                check_form(method).map_err(|reason| (format!("gateway.cache[{i}].methods[{j}]"), reason))?;
            }
            if rule.ttl.is_zero() {
                return Err((format!("gateway.cache[{i}].ttl"), "must be longer than 0s".into()));
            }
        }
        if self.replicas == 0 {
            return Err(("gateway.replicas".into(), "must be at least 1".into()));
        }
        if self.cache_store.max_bytes < 1024 {
            return Err(("gateway.cache_store.max_bytes".into(), "must be at least 1024".into()));
        }
        Ok(())
    }
}

/// `pkg.Service` or `pkg.Service/Method`.
fn check_form(pattern: &str) -> Result<(), String> {
    let (service, method) = match pattern.split_once('/') {
        Some((service, method)) => (service, Some(method)),
        None => (pattern, None),
    };
    if !service.contains('.') || service.starts_with('.') || method.is_some_and(|m| m.is_empty() || m.contains('/')) {
        return Err(format!(
            "'{pattern}' must be a fully qualified gRPC service or method, such as \"shop.catalog.v1.CatalogService/GetProduct\""
        ));
    }
    Ok(())
}

/// Whether a gateway pattern (`pkg.Service` or `pkg.Service/Method`) names
/// the method labelled `pkg.Service/Method`.
pub fn gateway_pattern_matches(pattern: &str, label: &str) -> bool {
    match label.strip_prefix(pattern) {
        Some("") => pattern.contains('/'),
        Some(rest) => !pattern.contains('/') && rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::MeshConfig;

    fn with_gateway(extra: &str) -> Result<MeshConfig, crate::ConfigError> {
        let text = format!(
            r#"
trust_domain = "t.local"
[services.catalog]
app = "127.0.0.1:1"
inbound = "127.0.0.1:2"
outbound = "127.0.0.1:3"
admin = "127.0.0.1:4"
grpc_services = ["shop.catalog.v1.CatalogService"]
[gateway]
listen = "127.0.0.1:21"
admin = "127.0.0.1:22"
sidecar = {{ outbound = "127.0.0.1:23", admin = "127.0.0.1:24" }}
{extra}
"#
        );
        MeshConfig::parse(&text, Path::new("/m/mesh.toml"))
    }

    fn refused(extra: &str) -> String {
        with_gateway(extra).expect_err("refused").to_string()
    }

    #[test]
    fn rates_parse_in_their_forms() {
        let rate = |text| parse_rate(text);
        assert_eq!(
            rate("10/s"),
            Ok(Rate {
                count: 10,
                period: Duration::from_secs(1)
            })
        );
        assert_eq!(
            rate("100/m"),
            Ok(Rate {
                count: 100,
                period: Duration::from_secs(60)
            })
        );
        assert_eq!(
            rate("5/10s"),
            Ok(Rate {
                count: 5,
                period: Duration::from_secs(10)
            })
        );
        assert!(rate("ten/s").is_err());
        assert!(rate("0/s").is_err());
        assert!(rate("10").is_err());
    }

    #[test]
    fn policy_sections_parse_with_their_defaults() {
        let config = with_gateway(
            r#"replicas = 2
[gateway.rate_limit_store]
redis = "local"
[[gateway.rate_limits]]
methods = ["shop.catalog.v1.CatalogService"]
key = "api_key"
rate = "10/s"
burst = 20
[[gateway.cache]]
methods = ["shop.catalog.v1.CatalogService/GetProduct"]
ttl = "30s"
"#,
        )
        .expect("valid");
        let gateway = config.gateway.expect("gateway");
        assert_eq!(gateway.replicas, 2);
        assert_eq!(
            gateway.rate_limit_store.redis_url().as_deref(),
            Some("redis://127.0.0.1:6379")
        );
        assert_eq!(gateway.rate_limit_store.on_error, OnStoreError::Open);
        let limit = &gateway.rate_limits[0];
        assert_eq!(
            (limit.key, limit.header.as_str(), limit.burst),
            (RateKey::ApiKey, "x-api-key", Some(20))
        );
        assert_eq!(gateway.cache[0].ttl, Duration::from_secs(30));
        assert_eq!(gateway.cache_store.max_bytes, 64 * 1024 * 1024);
        assert_eq!(
            gateway.replica(1, 1000),
            Some((
                "127.0.0.1:1021".parse().expect("addr"),
                "127.0.0.1:1022".parse().expect("addr")
            ))
        );
    }

    #[test]
    fn bad_policy_is_refused_with_file_key_and_reason() {
        let limit = |body: &str| format!("[[gateway.rate_limits]]\n{body}");
        let message = refused(&limit("methods = [\"a.B/C\"]\nkey = \"user\"\nrate = \"lots\""));
        assert!(
            message.starts_with("/m/mesh.toml: gateway.rate_limits[0].rate: 'lots' is not a rate"),
            "{message}"
        );
        let message = refused(&limit("methods = [\"GetProduct\"]\nkey = \"user\"\nrate = \"1/s\""));
        assert!(message.contains("gateway.rate_limits[0].methods[0]"), "{message}");
        let message = refused(&limit(
            "methods = [\"a.B/C\"]\nkey = \"user\"\nrate = \"1/s\"\nburst = 0",
        ));
        assert!(
            message.contains("gateway.rate_limits[0].burst: must be at least 1"),
            "{message}"
        );
        let message = refused(&limit("methods = [\"a.B/C\"]\nkey = \"someone\"\nrate = \"1/s\""));
        assert!(message.contains("unknown variant `someone`"), "{message}");
        let message = refused("[gateway.rate_limit_store]\nredis = \"127.0.0.1:6379\"");
        assert!(
            message.contains("gateway.rate_limit_store.redis: '127.0.0.1:6379' is not a Redis URL"),
            "{message}"
        );
        let message = refused("[[gateway.cache]]\nmethods = [\"a.B/C\"]\nttl = \"0s\"");
        assert!(
            message.contains("gateway.cache[0].ttl: must be longer than 0s"),
            "{message}"
        );
        let twice = "[[gateway.rate_limits]]\nname = \"x\"\nmethods = [\"a.B\"]\nkey = \"global\"\nrate = \"1/s\"\n";
        let message = refused(&format!("{twice}{twice}"));
        assert!(
            message.contains("gateway.rate_limits[1].name: 'x' names another rate limit too"),
            "{message}"
        );
        let message = refused("replicas = 0");
        assert!(message.contains("gateway.replicas: must be at least 1"), "{message}");
    }

    #[test]
    fn patterns_name_a_service_or_one_method() {
        let label = "shop.catalog.v1.CatalogService/GetProduct";
        assert!(gateway_pattern_matches("shop.catalog.v1.CatalogService", label));
        assert!(gateway_pattern_matches(label, label));
        assert!(!gateway_pattern_matches("shop.catalog.v1.Catalog", label));
        assert!(!gateway_pattern_matches("shop.catalog.v1.CatalogService/Get", label));
    }
}
