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
//! by default), weighed as the request, the key, twice the response and its JSON.
//!
//! A rule's `stale_if_error` keeps an answer that long past its TTL: a call
//! then goes upstream as for a miss, and if the method fails with an error
//! that says nothing about the request (UNAVAILABLE, DEADLINE_EXCEEDED,
//! INTERNAL, UNKNOWN), the stale answer is served instead, marked so
//! (RFC 5861; `Cache-Status: …; ttl=-N; detail=stale`). Without it an
//! expired entry is gone.

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

/// How long a rule's answers are fresh, and how long after that they may
/// stand in for a failing method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub ttl: Duration,
    pub stale_if_error: Duration,
}

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    pub message: DynamicMessage,
    /// The answer encoded: what a gRPC client gets, and what the ETag hashes.
    pub encoded: Bytes,
    /// The whole answer in JSON, printed once: what a REST hit sends
    /// (None if it does not print; a hit then reports the error as a miss would).
    pub json: Option<Bytes>,
    /// A strong validator: the answer's SHA-256, first 128 bits, quoted.
    pub etag: HeaderValue,
    stored: Instant,
    freshness: Freshness,
}

impl Entry {
    fn new(message: DynamicMessage, freshness: Freshness) -> Self {
        use sha2::Digest;
        let encoded = Bytes::from(message.encode_to_vec());
        let json = crate::rest::response::whole_json(&message).ok();
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
            json,
            etag: HeaderValue::try_from(etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\"")),
            stored: Instant::now(),
            freshness,
        }
    }

    /// Whether it is within its TTL.
    fn is_fresh(&self) -> bool {
        self.stored.elapsed() < self.freshness.ttl
    }

    /// Seconds it stays fresh from now (for `Cache-Control: max-age`),
    /// rounded up: a fresh entry says its whole TTL.
    pub fn max_age(&self) -> u64 {
        self.freshness
            .ttl
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
    /// Past its TTL, served because the method failed (stale-if-error).
    Stale,
}

impl Lookup {
    pub fn cache_status(self, entry: &Entry) -> HeaderValue {
        let text = match self {
            Lookup::Hit | Lookup::Coalesced => format!("meshwork; hit; ttl={}", entry.max_age()),
            Lookup::Miss => "meshwork; fwd=miss; stored".to_string(),
            Lookup::Refreshed => "meshwork; fwd=request; stored".to_string(),
            Lookup::Stale => {
                let past = entry.stored.elapsed().saturating_sub(entry.freshness.ttl).as_secs();
                format!("meshwork; hit; ttl=-{past}; detail=stale")
            }
        };
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("meshwork"))
    }
}

struct Ttl;

impl Expiry<Key, Arc<Entry>> for Ttl {
    fn expire_after_create(&self, _key: &Key, entry: &Arc<Entry>, _now: Instant) -> Option<Duration> {
        Some(entry.freshness.ttl + entry.freshness.stale_if_error)
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        entry: &Arc<Entry>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.freshness.ttl + entry.freshness.stale_if_error)
    }
}

pub struct ResponseCache {
    rules: Vec<(Vec<String>, Freshness)>,
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
        + 2 * entry.encoded.len()
        + entry.json.as_ref().map_or(0, Bytes::len);
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl ResponseCache {
    pub fn build(gateway: &Gateway, metrics: CacheMetrics) -> Self {
        let rules: Vec<(Vec<String>, Freshness)> = gateway
            .cache
            .iter()
            .map(|r| {
                let freshness = Freshness {
                    ttl: r.ttl,
                    stale_if_error: r.stale_if_error,
                };
                (r.methods.clone(), freshness)
            })
            .collect();
        Self::with_rules(
            rules,
            gateway.cache_store.max_bytes,
            gateway.limits.request_timeout,
            metrics,
        )
    }

    /// A cache of `rules`, holding at most `max_bytes`, for calls that take at
    /// most `longest_call`.
    fn with_rules(
        rules: Vec<(Vec<String>, Freshness)>,
        max_bytes: u64,
        longest_call: Duration,
        metrics: CacheMetrics,
    ) -> Self {
        let longest = rules
            .iter()
            .map(|(_, f)| f.ttl + f.stale_if_error)
            .max()
            .unwrap_or(Duration::from_secs(1))
            + longest_call;
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
            .max_capacity(max_bytes)
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
    pub fn ttl_for(&self, method: &Published) -> Option<Freshness> {
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
        freshness: Freshness,
        fresh: bool,
        call: F,
    ) -> Result<(Arc<Entry>, Lookup), Status>
    where
        F: Future<Output = Result<DynamicMessage, Status>>,
    {
        if fresh {
            let entry = Arc::new(Entry::new(call.await?, freshness));
            self.metrics.misses.inc();
            self.store(key, entry.clone()).await;
            return Ok((entry, Lookup::Refreshed));
        }
        if let Some(entry) = self.entries.get(&key).await {
            if entry.is_fresh() {
                self.metrics.hits.inc();
                return Ok((entry, Lookup::Hit));
            }
            // Stale, within its stale-if-error window: upstream first
            // (uncoalesced: the stale answer covers its callers meanwhile).
            return match call.await {
                Ok(message) => {
                    let fresh_entry = Arc::new(Entry::new(message, freshness));
                    self.metrics.misses.inc();
                    self.store(key, fresh_entry.clone()).await;
                    Ok((fresh_entry, Lookup::Miss))
                }
                Err(status) if stands_in_for(&status) => {
                    self.metrics.stale.inc();
                    Ok((entry, Lookup::Stale))
                }
                Err(status) => Err(status),
            };
        }
        let weigh_key = key.clone();
        let inserted = self
            .entries
            .entry(key)
            .or_try_insert_with(async { call.await.map(|message| Arc::new(Entry::new(message, freshness))) })
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

/// Whether a failure may be covered by a stale answer: one that says the
/// method could not answer, not that the request was wrong.
fn stands_in_for(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Internal | tonic::Code::Unknown
    )
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

    /// Past its TTL an answer stands in for a method that cannot answer, for
    /// its stale-if-error window only, and never for a refusal.
    #[tokio::test]
    async fn stale_answers_stand_in_for_failures_within_their_window() {
        use prost_reflect::ReflectMessage;

        let cache = ResponseCache::with_rules(Vec::new(), 1 << 20, Duration::from_secs(1), CacheMetrics::default());
        let key = |method: &str| Key {
            method: method.into(),
            request: Bytes::new(),
            user: None,
            preferences: None,
            generation: 0,
        };
        let answer = || async { Ok(prost_types::Duration { seconds: 7, nanos: 0 }.transcode_to_dynamic()) };
        let failing = |code| async move { Err::<DynamicMessage, _>(Status::new(code, "upstream")) };
        let short = Duration::from_millis(50);
        let with_window = Freshness {
            ttl: short,
            stale_if_error: Duration::from_secs(30),
        };
        let (_, lookup) = cache
            .get_or_call(key("a.S/M"), with_window, false, answer())
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Miss);
        let (_, lookup) = cache
            .get_or_call(key("a.S/M"), with_window, false, failing(tonic::Code::Unavailable))
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Hit, "fresh: no call");
        tokio::time::sleep(short * 2).await;
        let (entry, lookup) = cache
            .get_or_call(key("a.S/M"), with_window, false, failing(tonic::Code::Unavailable))
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Stale);
        assert!(
            lookup
                .cache_status(&entry)
                .to_str()
                .unwrap()
                .ends_with("; detail=stale")
        );
        assert_eq!(entry.max_age(), 0);
        let refused = cache
            .get_or_call(key("a.S/M"), with_window, false, failing(tonic::Code::InvalidArgument))
            .await;
        assert_eq!(
            refused.unwrap_err().code(),
            tonic::Code::InvalidArgument,
            "a refusal is not covered"
        );
        let (_, lookup) = cache
            .get_or_call(key("a.S/M"), with_window, false, answer())
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Miss, "an answer replaces the stale one");
        assert_eq!(cache.metrics.stale.get(), 1);

        let without = Freshness {
            ttl: short,
            stale_if_error: Duration::ZERO,
        };
        cache.get_or_call(key("b.S/M"), without, false, answer()).await.unwrap();
        tokio::time::sleep(short * 2).await;
        let gone = cache
            .get_or_call(key("b.S/M"), without, false, failing(tonic::Code::Unavailable))
            .await;
        assert_eq!(
            gone.unwrap_err().code(),
            tonic::Code::Unavailable,
            "no window: expired is gone"
        );
    }

    #[test]
    fn services_of_labels() {
        assert_eq!(
            service_of("shop.cart.v1.CartService/GetCart"),
            "shop.cart.v1.CartService"
        );
    }
}
