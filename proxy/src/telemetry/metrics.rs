//! The sidecar's own metric families (the resilience layers register theirs
//! beside them in the same registry). Labels are `&'static str` from
//! [`names`](super::names), so counting a call allocates nothing once its
//! series exists, and a call finds its series with one lookup
//! ([`CallSeries`]).

use std::{
    fmt::Write as _,
    sync::{Arc, OnceLock},
};

use meshwork_telemetry::grpc_status;
use parking_lot::RwLock;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::{Registry, Unit},
};

use crate::map::FastMap;

/// Which side of the sidecar a call or connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a peer sidecar to our app.
    Inbound,
    /// From our app to a peer.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// One call's series: direction, the peer workload (the caller inbound, the
/// destination outbound) and the method (`pkg.Service/Method`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CallLabels {
    pub direction: Direction,
    pub peer: &'static str,
    pub method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResponseLabels {
    pub direction: Direction,
    pub peer: &'static str,
    pub method: &'static str,
    pub grpc_status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TlsLabels {
    pub direction: Direction,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeniedLabels {
    pub caller: &'static str,
    pub method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabel {
    direction: Direction,
}

/// Latency buckets, in seconds: sub-millisecond to ten seconds, finer where
/// a mesh's calls usually are.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Calls: requests when they arrive, responses with their status when they
/// end, and how long they took.
#[derive(Debug, Clone)]
pub struct CallMetrics {
    requests: Family<CallLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    latency: Family<CallLabels, Histogram, fn() -> Histogram>,
    /// Each label set's series, found with one lookup per call: through the
    /// families a call would take three, each hashing its labels with
    /// SipHash under a lock.
    series: Arc<RwLock<FastMap<CallLabels, Arc<CallSeries>>>>,
}

impl CallMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = CallMetrics {
            requests: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            series: Arc::default(),
        };
        registry.register(
            "meshwork_requests",
            "Calls received, by direction, peer workload and method",
            metrics.requests.clone(),
        );
        registry.register(
            "meshwork_responses",
            "Calls ended, by direction, peer workload, method and gRPC status",
            metrics.responses.clone(),
        );
        registry.register_with_unit(
            "meshwork_response_latency",
            "Time from a call's arrival to the end of its response stream",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        metrics
    }

    /// Counts a call's request; the series it returns counts its end.
    pub fn request(&self, labels: CallLabels) -> Arc<CallSeries> {
        let known = self.series.read().get(&labels).cloned();
        let series = known.unwrap_or_else(|| {
            let mut all = self.series.write();
            all.entry(labels.clone())
                .or_insert_with(|| {
                    Arc::new(CallSeries {
                        requests: self.requests.get_or_create(&labels).clone(),
                        latency: self.latency.get_or_create(&labels).clone(),
                        responses: Default::default(),
                        response_family: self.responses.clone(),
                        labels,
                    })
                })
                .clone()
        });
        series.requests.inc();
        series
    }
}

/// One label set's series. The handles share their values with the
/// families' (prometheus-client's metrics are reference counted), so
/// counting on them is counting in the families.
#[derive(Debug)]
pub struct CallSeries {
    pub labels: CallLabels,
    requests: Counter,
    latency: Histogram,
    /// By gRPC status code, each made on the first response with it.
    responses: [OnceLock<Counter>; 17],
    response_family: Family<ResponseLabels, Counter>,
}

impl CallSeries {
    pub fn response(&self, code: u8, seconds: f64) {
        // A code past the last one counts as UNKNOWN, as its label says.
        let slot = if usize::from(code) < self.responses.len() {
            usize::from(code)
        } else {
            usize::from(grpc_status::UNKNOWN)
        };
        let counter = self.responses[slot].get_or_init(|| {
            let labels = ResponseLabels {
                direction: self.labels.direction,
                peer: self.labels.peer,
                method: self.labels.method,
                grpc_status: grpc_status::label(code),
            };
            self.response_family.get_or_create(&labels).clone()
        });
        counter.inc();
        self.latency.observe(seconds);
    }
}

/// Connections: open now, and handshakes that failed.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    open: Family<DirectionLabel, Gauge>,
    tls_failures: Family<TlsLabels, Counter>,
}

impl ConnectionMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ConnectionMetrics {
            open: Family::default(),
            tls_failures: Family::default(),
        };
        registry.register(
            "meshwork_open_connections",
            "Connections open on the inbound and outbound listeners",
            metrics.open.clone(),
        );
        registry.register(
            "meshwork_tls_handshake_failures",
            "mTLS handshakes that failed or presented no acceptable identity, by why",
            metrics.tls_failures.clone(),
        );
        // Both directions show from the start, at zero.
        for direction in [Direction::Inbound, Direction::Outbound] {
            let _ = metrics.open.get_or_create(&DirectionLabel { direction });
        }
        metrics
    }

    /// The gauge of open connections on one side.
    pub fn open(&self, direction: Direction) -> Gauge {
        self.open.get_or_create(&DirectionLabel { direction }).clone()
    }

    pub fn tls_failure(&self, direction: Direction, reason: &'static str) {
        self.tls_failures.get_or_create(&TlsLabels { direction, reason }).inc();
    }
}

/// Calls refused by the authorization policy.
#[derive(Debug, Clone)]
pub struct AuthzMetrics {
    denied: Family<DeniedLabels, Counter>,
}

impl AuthzMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = AuthzMetrics {
            denied: Family::default(),
        };
        registry.register(
            "meshwork_authz_denied",
            "Calls refused by the authorization policy, by caller and method",
            metrics.denied.clone(),
        );
        metrics
    }

    pub fn denied(&self, caller: &'static str, method: &'static str) {
        self.denied.get_or_create(&DeniedLabels { caller, method }).inc();
    }
}

/// Telemetry that was lost: spans the exporter dropped (read from
/// `meshwork-telemetry` at each scrape) and access-log lines that did not
/// fit the writer's queue.
#[derive(Debug, Clone, Default)]
pub struct DropMetrics {
    pub access_log: Counter,
}

impl DropMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = DropMetrics::default();
        registry.register(
            "meshwork_access_log_dropped",
            "Access-log lines dropped because the writer was behind",
            metrics.access_log.clone(),
        );
        registry.register_collector(Box::new(SpanDrops));
        metrics
    }
}

/// `meshwork_spans_dropped_total{reason}`: the process-wide counts kept by
/// the span exporter, read when scraped.
#[derive(Debug)]
struct SpanDrops;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl Collector for SpanDrops {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let drops = meshwork_telemetry::span_drops();
        let mut family = encoder.encode_descriptor(
            "meshwork_spans_dropped",
            "Spans not exported: the export queue was full, or the collector failed",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, count) in [("queue_full", drops.queue_full), ("export_failed", drops.export_failed)] {
            let labels = ReasonLabel { reason };
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(count).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn a_series_counts_in_the_families_it_came_from() {
        let mut registry = Registry::default();
        let calls = CallMetrics::register(&mut registry);
        let labels = CallLabels {
            direction: Direction::Inbound,
            peer: "cart",
            method: "shop.catalog.v1.CatalogService/GetProduct",
        };
        for code in [0, 0, 5, 99] {
            calls.request(labels.clone()).response(code, 0.001);
        }
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        let series = r#"direction="inbound",peer="cart",method="shop.catalog.v1.CatalogService/GetProduct""#;
        for line in [
            format!("meshwork_requests_total{{{series}}} 4"),
            format!("meshwork_responses_total{{{series},grpc_status=\"0\"}} 2"),
            format!("meshwork_responses_total{{{series},grpc_status=\"5\"}} 1"),
            // A code past the last one is UNKNOWN.
            format!("meshwork_responses_total{{{series},grpc_status=\"2\"}} 1"),
            format!("meshwork_response_latency_seconds_count{{{series}}} 4"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }
}
