//! The outbound resilience metrics, registered once in the sidecar's
//! registry: retries made and refused by the budget (by destination), and
//! endpoint ejections (by destination and endpoint). Handles are resolved
//! per destination or endpoint when it is built, so a call only bumps an
//! atomic counter.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    destination: String,
    endpoint: String,
}

#[derive(Clone, Default)]
pub struct OutboundMetrics {
    retries: Family<DestinationLabels, Counter>,
    retries_refused: Family<DestinationLabels, Counter>,
    ejections: Family<EndpointLabels, Counter>,
}

/// One destination's retry counters.
#[derive(Clone, Default, Debug)]
pub struct RetryCounters {
    pub retries: Counter,
    pub refused: Counter,
}

impl OutboundMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = OutboundMetrics::default();
        registry.register(
            "meshwork_outbound_retries",
            "Retries sent, by destination",
            metrics.retries.clone(),
        );
        registry.register(
            "meshwork_outbound_retries_refused",
            "Retries not sent because the destination's retry budget was spent",
            metrics.retries_refused.clone(),
        );
        registry.register(
            "meshwork_outbound_endpoint_ejections",
            "Endpoints taken out of balancing after consecutive failures",
            metrics.ejections.clone(),
        );
        metrics
    }

    pub fn retry_counters(&self, destination: &str) -> RetryCounters {
        let labels = DestinationLabels {
            destination: destination.to_string(),
        };
        RetryCounters {
            retries: self.retries.get_or_create(&labels).clone(),
            refused: self.retries_refused.get_or_create(&labels).clone(),
        }
    }

    pub fn ejections(&self, destination: &str, endpoint: std::net::SocketAddr) -> Counter {
        let labels = EndpointLabels {
            destination: destination.to_string(),
            endpoint: endpoint.to_string(),
        };
        self.ejections.get_or_create(&labels).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed() {
        let mut registry = Registry::default();
        let metrics = OutboundMetrics::register(&mut registry);
        metrics.retry_counters("catalog").retries.inc();
        metrics.ejections("catalog", ([127, 0, 0, 1], 7202).into()).inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(r#"meshwork_outbound_retries_total{destination="catalog"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"meshwork_outbound_retries_refused_total{destination="catalog"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"meshwork_outbound_endpoint_ejections_total{destination="catalog",endpoint="127.0.0.1:7202"} 1"#
            ),
            "{text}"
        );
    }
}
