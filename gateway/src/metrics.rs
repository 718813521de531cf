//! The gateway's Prometheus metrics, served on its admin port: requests by
//! protocol, method, HTTP status and gRPC status; latency histograms; auth
//! failures by reason; open connections. Label values are static strings
//! or shared `Arc<str>`s, so counting a request allocates nothing.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// A label value shared with the catalog (a method's name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shared(pub Arc<str>);

impl EncodeLabelValue for Shared {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

/// An HTTP status as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HttpStatus(pub u16);

impl EncodeLabelValue for HttpStatus {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// `rest`, `grpc` or `grpc-web`.
    pub protocol: &'static str,
    /// `pkg.Service/Method`, or `none` when no method was found.
    pub rpc: Shared,
    pub http_status: HttpStatus,
    pub grpc_status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LatencyLabels {
    pub protocol: &'static str,
    pub rpc: Shared,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    auth_failures: Family<ReasonLabels, Counter>,
    pub open_connections: Gauge,
    pub log_lines_dropped: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                // 0.5 ms to ~16 s, doubling.
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.0005, 2.0, 16,
                ))
            }),
            auth_failures: Family::default(),
            open_connections: Gauge::default(),
            log_lines_dropped: Counter::default(),
        };
        registry.register(
            "gateway_requests",
            "Requests answered, by protocol, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "gateway_request_duration_seconds",
            "Time from request to the end of the response",
            metrics.latency.clone(),
        );
        registry.register(
            "gateway_auth_failures",
            "Requests refused by authentication or authorization, by reason",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "gateway_open_connections",
            "Client connections open now",
            metrics.open_connections.clone(),
        );
        registry.register(
            "gateway_access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            metrics.log_lines_dropped.clone(),
        );
        metrics
    }

    pub fn request(&self, labels: RequestLabels, took: Duration) {
        self.latency
            .get_or_create(&LatencyLabels {
                protocol: labels.protocol,
                rpc: labels.rpc.clone(),
            })
            .observe(took.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason }).inc();
    }
}
