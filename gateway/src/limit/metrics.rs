//! Rate-limit metrics: decisions by method and outcome, and errors of the
//! shared store (Redis).

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::metrics::Shared;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    rpc: Shared,
    /// `allowed`, `refused`, `store_error_open`, `store_error_closed`.
    outcome: &'static str,
}

#[derive(Debug, Clone)]
pub struct LimitMetrics {
    decisions: Family<DecisionLabels, Counter>,
    pub store_errors: Counter,
}

impl LimitMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = LimitMetrics {
            decisions: Family::default(),
            store_errors: Counter::default(),
        };
        registry.register(
            "gateway_rate_limit_decisions",
            "Rate-limited calls, by method and outcome",
            metrics.decisions.clone(),
        );
        registry.register(
            "gateway_rate_limit_store_errors",
            "Calls the rate limit store (Redis) could not answer",
            metrics.store_errors.clone(),
        );
        metrics
    }

    pub fn decision(&self, rpc: &Arc<str>, outcome: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                rpc: Shared(rpc.clone()),
                outcome,
            })
            .inc();
    }
}
