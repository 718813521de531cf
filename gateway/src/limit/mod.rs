//! Rate limits at the edge (`[[gateway.rate_limits]]`): every call to a
//! published method, whatever its protocol (REST, gRPC-Web, gRPC, and the
//! MCP tool calls to come), passes through [`RateLimits::check`] right
//! after its caller is known. Each rule that names the method is asked
//! (GCRA, counted per user, API key, client address or in all); the call
//! is refused when any of them refuses, with the longest wait, so the
//! strictest rule wins. The answer carries what the front end writes:
//! `Retry-After` on a refusal, and the IETF draft's `RateLimit-Policy` and
//! `RateLimit` fields on every limited response.
//!
//! The counters live in this process ([`memory`], governor) or in a Redis
//! that the gateway's replicas share ([`redis`], the same GCRA in a Lua
//! script, so N replicas together allow what one would).

mod headers;
mod memory;
mod metrics;
mod redis;

use std::{net::IpAddr, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderValue};
use meshwork_config::{Gateway, OnStoreError, RateKey, gateway_pattern_matches};
use tonic::Status;

pub use self::metrics::LimitMetrics;
use crate::{auth::Principal, catalog::Published};

/// One configured rule, ready to count.
struct Rule {
    /// Its name in the headers.
    name: Arc<str>,
    methods: Vec<String>,
    key: RateKey,
    header: http::HeaderName,
    /// Calls per window, and the window, as configured (the headers' `q` and `w`).
    count: u32,
    window: Duration,
    /// Calls allowed at once.
    burst: u32,
    /// Time between two calls at the steady rate (GCRA's emission interval).
    interval: Duration,
    /// Its `RateLimit-Policy` member, made once: most calls meet one rule.
    policy: Option<HeaderValue>,
}

/// What one rule said about one call.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    pub allowed: bool,
    /// Calls left now (the draft's `r`).
    pub remaining: u32,
    /// Until the whole burst is available again (the draft's `t`).
    pub reset: Duration,
    /// For a refusal: until one call would pass.
    pub retry_after: Duration,
}

enum Store {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

/// The gateway's rate limits, shared by every front end.
pub struct RateLimits {
    rules: Vec<Rule>,
    store: Store,
    on_error: OnStoreError,
    metrics: LimitMetrics,
}

/// The answer for one call: refused or not, and the header fields to send.
#[derive(Debug, Default)]
pub struct Decision {
    refusal: Option<Refusal>,
    policy: Option<HeaderValue>,
    state: Option<HeaderValue>,
}

#[derive(Debug)]
enum Refusal {
    /// Over a limit: 429 / RESOURCE_EXHAUSTED.
    Limited { rule: Arc<str>, retry_after: Duration },
    /// Redis unreachable and the file says fail closed: 503 / UNAVAILABLE.
    StoreDown,
}

#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct LimitError {
    key: String,
    reason: String,
}

impl RateLimits {
    /// The rules of `[gateway]`, counting in memory or in its Redis. The
    /// config check has refused rules that do not parse; they are checked
    /// again here rather than trusted.
    pub fn build(gateway: &Gateway, metrics: LimitMetrics) -> Result<Self, LimitError> {
        let mut rules = Vec::new();
        for (i, limit) in gateway.rate_limits.iter().enumerate() {
            let invalid = |field: &str, reason: String| LimitError {
                key: format!("gateway.rate_limits[{i}].{field}"),
                reason,
            };
            let rate = limit.parsed_rate().map_err(|r| invalid("rate", r))?;
            let burst = limit.burst_or_default().map_err(|r| invalid("burst", r))?.max(1);
            let header =
                http::HeaderName::from_bytes(limit.header.as_bytes()).map_err(|e| invalid("header", e.to_string()))?;
            let mut rule = Rule {
                name: limit.name.clone().unwrap_or_else(|| format!("limit{i}")).into(),
                methods: limit.methods.clone(),
                key: limit.key,
                header,
                count: rate.count,
                window: rate.period,
                burst,
                interval: (rate.period / rate.count).max(Duration::from_micros(1)),
                policy: None,
            };
            rule.policy = headers::policy(&[&rule]);
            rules.push(rule);
        }
        let store = match gateway.rate_limit_store.redis_url() {
            Some(url) if !rules.is_empty() => Store::Redis(redis::RedisStore::connect(&url, metrics.clone()).map_err(
                |e| LimitError {
                    key: "gateway.rate_limit_store.redis".into(),
                    reason: e.to_string(),
                },
            )?),
            _ => Store::Memory(memory::MemoryStore::new(rules.iter().map(|r| (r.interval, r.burst)))),
        };
        Ok(RateLimits {
            rules,
            store,
            on_error: gateway.rate_limit_store.on_error,
            metrics,
        })
    }

    /// Counts a call to `method` by `principal` (none for an anonymous
    /// call to a public method) from `client`, and says whether it may
    /// proceed. Protocol-neutral: each front end maps the answer.
    pub async fn check(
        &self,
        method: &Published,
        principal: Option<&Principal>,
        client: IpAddr,
        request_headers: &HeaderMap,
    ) -> Decision {
        let label = &*method.label;
        let applying: Vec<usize> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.methods.iter().any(|p| gateway_pattern_matches(p, label)))
            .map(|(i, _)| i)
            .collect();
        if applying.is_empty() {
            return Decision::default();
        }
        let keys: Vec<String> = applying
            .iter()
            .map(|&i| counting_key(&self.rules[i], principal, client, request_headers))
            .collect();
        let verdicts = match &self.store {
            Store::Memory(store) => Some(
                applying
                    .iter()
                    .zip(&keys)
                    .map(|(&i, key)| store.check(i, key))
                    .collect::<Vec<_>>(),
            ),
            Store::Redis(store) => {
                let asks: Vec<(&str, &Rule, &str)> = applying
                    .iter()
                    .zip(&keys)
                    .map(|(&i, key)| (&*self.rules[i].name, &self.rules[i], key.as_str()))
                    .collect();
                store.check(&asks).await
            }
        };
        let verdicts = match verdicts {
            Some(verdicts) => verdicts,
            None => {
                // The store is down (counted and logged by the store).
                return match self.on_error {
                    OnStoreError::Open => {
                        self.metrics.decision(&method.label, "store_error_open");
                        Decision::default()
                    }
                    OnStoreError::Closed => {
                        self.metrics.decision(&method.label, "store_error_closed");
                        Decision {
                            refusal: Some(Refusal::StoreDown),
                            ..Decision::default()
                        }
                    }
                };
            }
        };
        let rules: Vec<&Rule> = applying.iter().map(|&i| &self.rules[i]).collect();
        let refused = rules
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| !v.allowed)
            .max_by_key(|(_, v)| v.retry_after)
            .map(|(rule, v)| Refusal::Limited {
                rule: rule.name.clone(),
                retry_after: v.retry_after,
            });
        self.metrics
            .decision(&method.label, if refused.is_some() { "refused" } else { "allowed" });
        Decision {
            refusal: refused,
            policy: headers::policy(&rules),
            state: headers::state(&rules, &verdicts),
        }
    }

    /// Forgets counters of keys that are full again (memory only), so the
    /// maps do not grow with every client ever seen.
    pub fn start_housekeeping(self: &Arc<Self>) {
        if let Store::Memory(_) = self.store {
            let this = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    let Some(limits) = this.upgrade() else { break };
                    if let Store::Memory(store) = &limits.store {
                        store.retain_recent();
                    }
                }
            });
        }
    }
}

/// Whom a call counts against, under one rule. A user id, a client address
/// or a digest of the API key (the key itself is never stored).
fn counting_key(rule: &Rule, principal: Option<&Principal>, client: IpAddr, headers: &HeaderMap) -> String {
    match rule.key {
        RateKey::Global => "all".into(),
        RateKey::Client => format!("ip:{client}"),
        RateKey::User => match principal {
            Some(p) => format!("user:{}", p.user_id),
            None => format!("ip:{client}"),
        },
        RateKey::ApiKey => match headers.get(&rule.header) {
            Some(value) => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(value.as_bytes());
                let mut text = String::with_capacity(4 + 32);
                text.push_str("key:");
                for byte in &digest[..16] {
                    use std::fmt::Write;
                    let _ = write!(text, "{byte:02x}");
                }
                text
            }
            None => format!("ip:{client}"),
        },
    }
}

impl Decision {
    /// The status a refused call ends with, or none when it may proceed.
    pub fn refusal(&self) -> Option<Status> {
        match self.refusal.as_ref()? {
            Refusal::Limited { rule, retry_after } => Some(Status::resource_exhausted(format!(
                "rate limit '{rule}' reached; retry in {} s",
                retry_seconds(*retry_after)
            ))),
            Refusal::StoreDown => Some(Status::unavailable(
                "the rate limit store cannot be reached, and the gateway is set to refuse calls then",
            )),
        }
    }

    /// Writes `RateLimit-Policy`, `RateLimit` and, on a refusal, `Retry-After`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(policy) = &self.policy {
            headers.insert(headers::RATELIMIT_POLICY, policy.clone());
        }
        if let Some(state) = &self.state {
            headers.insert(headers::RATELIMIT, state.clone());
        }
        match &self.refusal {
            Some(Refusal::Limited { retry_after, .. }) => {
                headers.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(retry_seconds(*retry_after)),
                );
            }
            Some(Refusal::StoreDown) => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            None => {}
        }
    }
}

/// Whole seconds, rounded up: `Retry-After` has no fractions, and rounding
/// down would send the client back too early.
fn retry_seconds(wait: Duration) -> u64 {
    wait.as_micros().div_ceil(1_000_000).max(1) as u64
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::Path, time::Instant};

    use meshwork_contracts::Mesh;

    use super::*;
    use crate::catalog::Catalog;

    #[tokio::test]
    async fn the_strictest_rule_wins_and_every_rule_is_reported() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh.toml");
        let mesh = Mesh::load(&path).expect("the repository's mesh.toml");
        let catalog = Catalog::build(&mesh).expect("its catalog");
        let method = catalog
            .method("/shop.catalog.v1.CatalogService/GetProduct")
            .expect("GetProduct is published");
        let mut gateway = mesh.config.gateway.clone().expect("a [gateway]");
        let rule = |name: &str, key: &str, rate: &str, burst: u32| meshwork_config::RateLimit {
            name: Some(name.into()),
            methods: vec!["shop.catalog.v1.CatalogService".into()],
            key: match key {
                "client" => RateKey::Client,
                _ => RateKey::Global,
            },
            header: "x-api-key".into(),
            rate: rate.into(),
            burst: Some(burst),
        };
        gateway.rate_limits = vec![
            rule("wide", "global", "1000/s", 1000),
            rule("narrow", "client", "1/m", 2),
        ];
        let mut registry = prometheus_client::registry::Registry::default();
        let limits = RateLimits::build(&gateway, LimitMetrics::register(&mut registry)).expect("rules");
        let client = IpAddr::from(Ipv4Addr::LOCALHOST);
        let headers = HeaderMap::new();
        for left in [1, 0] {
            let decision = limits.check(method, None, client, &headers).await;
            assert!(decision.refusal().is_none());
            let mut fields = HeaderMap::new();
            decision.write_headers(&mut fields);
            assert_eq!(fields["ratelimit-policy"], "\"wide\";q=1000;w=1, \"narrow\";q=1;w=60");
            let state = fields["ratelimit"].to_str().expect("ascii");
            assert!(state.contains(&format!("\"narrow\";r={left};")), "{state}");
        }
        let refused = limits.check(method, None, client, &headers).await;
        let status = refused.refusal().expect("the narrow rule refuses");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("'narrow'"), "{}", status.message());
        let mut fields = HeaderMap::new();
        refused.write_headers(&mut fields);
        let retry: u64 = fields["retry-after"].to_str().expect("ascii").parse().expect("seconds");
        assert!((59..=60).contains(&retry), "{retry}");

        // What one decision costs (meaningful in a release build:
        // `cargo test --release -p meshwork-gateway --lib limit -- --nocapture`).
        gateway.rate_limits = vec![rule("wide", "client", "1000000000/s", 1_000_000_000)];
        let limits = RateLimits::build(&gateway, LimitMetrics::register(&mut registry)).expect("rules");
        let calls = 200_000;
        let started = Instant::now();
        for _ in 0..calls {
            let decision = limits.check(method, None, client, &headers).await;
            let mut fields = HeaderMap::new();
            decision.write_headers(&mut fields);
            assert!(decision.refusal().is_none());
        }
        println!(
            "in-memory rate limit: {} ns per decision, headers written",
            started.elapsed().as_nanos() / calls
        );
    }
}
