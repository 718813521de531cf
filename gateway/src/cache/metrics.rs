//! Cache metrics: hits, misses, coalesced calls, stale answers, evictions, bytes held.

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub coalesced: Counter,
    pub stale: Counter,
    pub evictions: Counter,
    pub bytes: Gauge,
}

impl CacheMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = CacheMetrics::default();
        registry.register(
            "gateway_cache_hits",
            "Answers served from the cache",
            metrics.hits.clone(),
        );
        registry.register(
            "gateway_cache_misses",
            "Cacheable calls that went upstream (and were stored)",
            metrics.misses.clone(),
        );
        registry.register(
            "gateway_cache_coalesced",
            "Calls that waited for another call's upstream answer to the same key",
            metrics.coalesced.clone(),
        );
        registry.register(
            "gateway_cache_stale",
            "Stale answers served because the method failed (stale-if-error)",
            metrics.stale.clone(),
        );
        registry.register(
            "gateway_cache_evictions",
            "Entries dropped to stay within max_bytes",
            metrics.evictions.clone(),
        );
        registry.register(
            "gateway_cache_bytes",
            "Bytes the cache holds (keys and answers, as weighed)",
            metrics.bytes.clone(),
        );
        metrics
    }
}
