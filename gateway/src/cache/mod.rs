//! The response cache (`[[gateway.cache]]`): answers of side-effect-free
//! unary methods (the contract says `NO_SIDE_EFFECTS`; the config check
//! refuses a rule on any other), kept for the rule's TTL.
//!
//! The key is the method, the canonical request message, the preferences
//! the call carries into the mesh as baggage (a service may answer by them:
//! the catalog's prices are in the user's currency), and, unless the method
//! is public, the user: public data (the catalogue) is shared by everyone
//! with the same preferences, private data never is. The canonical request is the request
//! message encoded by prost-reflect, which writes fields in field-number
//! order whatever order they were set or arrived in, so a REST call
//! (built from path, query and body) and a gRPC call (its frame decoded
//! and encoded again) asking the same thing share one entry. (Map fields
//! are written in hash-map order; two equal requests with maps may then
//! miss each other's entry, never share a wrong one.)
//!
//! Concurrent misses of one key make one upstream call (moka's
//! `entry().or_try_insert_with`); errors are never stored. A write through
//! the gateway (a method that is not NO_SIDE_EFFECTS) drops the writer's
//! entries of that service, and the service's shared ones: each key holds a
//! generation number per (user, service), which a write moves on, so the
//! old entries are never found again (O(1); they age out by TTL or size).
//! Memory is bounded by bytes (`[gateway.cache_store] max_bytes`, 64 MiB
//! by default), weighed as the request, the key and twice the response.

pub mod grpc;
mod metrics;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::HeaderValue;
use meshwork_config::{Gateway, gateway_pattern_matches};
use meshwork_contracts::Idempotency;
use moka::{Expiry, notification::RemovalCause};
use prost::Message;
use prost_reflect::DynamicMessage;
use tonic::Status;

pub use self::metrics::CacheMetrics;
use crate::{
    auth::Principal,
    catalog::{Access, Published},
};

/// Bytes counted per entry besides its request and response.
const ENTRY_OVERHEAD: usize = 160;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    method: Arc<str>,
    request: Bytes,
    /// None for a public method's shared entry.
    user: Option<Arc<str>>,
    /// The user's preferences the call carries (`locale` and `currency`
    /// baggage), None for an anonymous call.
    preferences: Option<Arc<str>>,
    generation: u64,
}

impl Key {
    /// Whether the answer may be someone's own: it is per user or in their
    /// preferences, so no shared cache downstream may keep it.
    pub fn personal(&self) -> bool {
        self.user.is_some() || self.preferences.is_some()
    }
}

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    pub message: DynamicMessage,
    /// The answer encoded: what a gRPC client gets, and what the ETag hashes.
    pub encoded: Bytes,
    /// A strong validator: the answer's SHA-256, first 128 bits, quoted.
    pub etag: HeaderValue,
    stored: Instant,
    ttl: Duration,
}

impl Entry {
    fn new(message: DynamicMessage, ttl: Duration) -> Self {
        use sha2::Digest;
        let encoded = Bytes::from(message.encode_to_vec());
        let digest = sha2::Sha256::digest(&encoded);
        let mut etag = String::with_capacity(34);
        etag.push('"');
        for byte in &digest[..16] {
            use std::fmt::Write;
            let _ = write!(etag, "{byte:02x}");
        }
        etag.push('"');
        Entry {
            message,
            encoded,
            etag: HeaderValue::try_from(etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\"")),
            stored: Instant::now(),
            ttl,
        }
    }

    /// Seconds it stays fresh from now (for `Cache-Control: max-age`),
    /// rounded up: a fresh entry says its whole TTL.
    pub fn max_age(&self) -> u64 {
        self.ttl
            .saturating_sub(self.stored.elapsed())
            .as_millis()
            .div_ceil(1000) as u64
    }

    /// Its age in whole seconds (`Age`).
    pub fn age(&self) -> u64 {
        self.stored.elapsed().as_secs()
    }
}

/// How an answer was had, for `Cache-Status` (RFC 9211) and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// From the cache.
    Hit,
    /// Not there: this call went upstream and stored the answer.
    Miss,
    /// Not there, but another call for the same key was already upstream:
    /// this one waited for its answer.
    Coalesced,
    /// The client asked for a fresh answer (`Cache-Control: no-cache`).
    Refreshed,
}

impl Lookup {
    pub fn cache_status(self, entry: &Entry) -> HeaderValue {
        let text = match self {
            Lookup::Hit | Lookup::Coalesced => format!("meshwork; hit; ttl={}", entry.max_age()),
            Lookup::Miss => "meshwork; fwd=miss; stored".to_string(),
            Lookup::Refreshed => "meshwork; fwd=request; stored".to_string(),
        };
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("meshwork"))
    }
}

struct Ttl;

impl Expiry<Key, Arc<Entry>> for Ttl {
    fn expire_after_create(&self, _key: &Key, entry: &Arc<Entry>, _now: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        entry: &Arc<Entry>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub struct ResponseCache {
    rules: Vec<(Vec<String>, Duration)>,
    entries: moka::future::Cache<Key, Arc<Entry>>,
    /// The generation of each (user, service) and (shared, service) a write
    /// has moved on; absent means 0. Kept for the longest TTL plus the
    /// longest call after the write: an entry of an older generation may be
    /// stored by a call that started before the write, and by then it has
    /// expired too, so forgetting the generation cannot bring it back.
    generations: moka::sync::Cache<(Option<Arc<str>>, Arc<str>), u64>,
    next_generation: AtomicU64,
    metrics: CacheMetrics,
}

fn weight(key: &Key, entry: &Arc<Entry>) -> u32 {
    let bytes = ENTRY_OVERHEAD
        + key.method.len()
        + key.request.len()
        + key.user.as_ref().map_or(0, |u| u.len())
        + key.preferences.as_ref().map_or(0, |p| p.len())
        + 2 * entry.encoded.len();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl ResponseCache {
    pub fn build(gateway: &Gateway, metrics: CacheMetrics) -> Self {
        let rules: Vec<(Vec<String>, Duration)> = gateway.cache.iter().map(|r| (r.methods.clone(), r.ttl)).collect();
        let longest = rules
            .iter()
            .map(|(_, ttl)| *ttl)
            .max()
            .unwrap_or(Duration::from_secs(1))
            + gateway.limits.request_timeout;
        let listener = {
            let metrics = metrics.clone();
            move |key: Arc<Key>, entry: Arc<Entry>, cause: RemovalCause| {
                metrics.bytes.dec_by(i64::from(weight(&key, &entry)));
                if cause == RemovalCause::Size {
                    metrics.evictions.inc();
                }
            }
        };
        let entries = moka::future::Cache::builder()
            .max_capacity(gateway.cache_store.max_bytes)
            .weigher(weight)
            .expire_after(Ttl)
            .eviction_listener(listener)
            .build();
        ResponseCache {
            rules,
            entries,
            generations: moka::sync::Cache::builder().time_to_live(longest).build(),
            next_generation: AtomicU64::new(1),
            metrics,
        }
    }

    /// The TTL of `method`'s answers, if they are cached. A method whose
    /// contract was read after the config check (reflection) is checked
    /// here: never cached unless side-effect free and unary.
    pub fn ttl_for(&self, method: &Published) -> Option<Duration> {
        if self.rules.is_empty()
            || method.idempotency != Idempotency::NoSideEffects
            || method.server_streaming
            || method.client_streaming
        {
            return None;
        }
        self.rules
            .iter()
            .find(|(patterns, _)| patterns.iter().any(|p| gateway_pattern_matches(p, &method.label)))
            .map(|(_, ttl)| *ttl)
    }

    /// The key of a call to `method` with `request` by `principal`, carrying
    /// the context `trace` (its preference baggage) into the mesh.
    pub fn key(
        &self,
        method: &Published,
        request: &DynamicMessage,
        principal: Option<&Principal>,
        trace: &opentelemetry::Context,
    ) -> Key {
        let user: Option<Arc<str>> = match (&method.access, principal) {
            (Access::Public, _) => None,
            (_, Some(p)) => Some(p.user_id.as_str().into()),
            // Unreachable past `caller::authorize`; never shared all the same.
            (_, None) => Some("".into()),
        };
        let service = service_of(&method.label);
        let generation = self.generations.get(&(user.clone(), service.into())).unwrap_or(0);
        Key {
            method: method.label.clone(),
            request: Bytes::from(request.encode_to_vec()),
            user,
            preferences: crate::upstream::preferences_in(trace),
            generation,
        }
    }

    /// The answer for `key`: stored, or had from `call` (once for all the
    /// concurrent callers of one key) and stored unless it failed.
    /// `fresh` (the client's `no-cache`) skips the stored one.
    pub async fn get_or_call<F>(
        &self,
        key: Key,
        ttl: Duration,
        fresh: bool,
        call: F,
    ) -> Result<(Arc<Entry>, Lookup), Status>
    where
        F: Future<Output = Result<DynamicMessage, Status>>,
    {
        if fresh {
            let entry = Arc::new(Entry::new(call.await?, ttl));
            self.metrics.misses.inc();
            self.store(key, entry.clone()).await;
            return Ok((entry, Lookup::Refreshed));
        }
        if let Some(entry) = self.entries.get(&key).await {
            self.metrics.hits.inc();
            return Ok((entry, Lookup::Hit));
        }
        let weigh_key = key.clone();
        let inserted = self
            .entries
            .entry(key)
            .or_try_insert_with(async { call.await.map(|message| Arc::new(Entry::new(message, ttl))) })
            .await
            .map_err(|error| Status::clone(&error))?;
        let entry = inserted.value().clone();
        if inserted.is_fresh() {
            self.metrics.misses.inc();
            self.metrics.bytes.inc_by(i64::from(weight(&weigh_key, &entry)));
            Ok((entry, Lookup::Miss))
        } else {
            self.metrics.coalesced.inc();
            Ok((entry, Lookup::Coalesced))
        }
    }

    async fn store(&self, key: Key, entry: Arc<Entry>) {
        self.metrics.bytes.inc_by(i64::from(weight(&key, &entry)));
        self.entries.insert(key, entry).await;
    }

    /// After a call to `method` that may have changed something: the
    /// caller's entries of its service, and the service's shared ones, are
    /// not found again.
    pub fn wrote(&self, method: &Published, principal: Option<&Principal>) {
        if self.rules.is_empty() || method.idempotency == Idempotency::NoSideEffects {
            return;
        }
        let service: Arc<str> = service_of(&method.label).into();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        if let Some(principal) = principal {
            self.generations
                .insert((Some(principal.user_id.as_str().into()), service.clone()), generation);
        }
        self.generations.insert((None, service), generation);
    }
}

/// `pkg.Service` of `pkg.Service/Method`.
fn service_of(label: &str) -> &str {
    label.split_once('/').map_or(label, |(service, _)| service)
}

/// Whether a client's `Cache-Control` asks for a fresh answer.
pub fn wants_fresh(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|directive| {
            let directive = directive.trim();
            directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        })
}

/// Whether `If-None-Match` names `etag` (or is `*`).
pub fn not_modified(headers: &http::HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else { return false };
    headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    #[test]
    fn client_directives_and_validators() {
        let mut headers = HeaderMap::new();
        assert!(!wants_fresh(&headers));
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, no-cache"),
        );
        assert!(wants_fresh(&headers));
        let etag = HeaderValue::from_static("\"abc\"");
        headers.insert(
            http::header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(not_modified(&headers, &etag));
        headers.insert(http::header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        assert!(!not_modified(&headers, &etag));
        headers.insert(http::header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&headers, &etag));
    }

    #[test]
    fn services_of_labels() {
        assert_eq!(
            service_of("shop.cart.v1.CartService/GetCart"),
            "shop.cart.v1.CartService"
        );
    }
}
