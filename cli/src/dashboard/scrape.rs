//! Reads each sidecar's `/metrics` and `/ready`: the counters the golden
//! metrics are computed from, summed over methods per direction and peer,
//! parsed with the `prometheus-parse` crate (the OpenMetrics text the
//! sidecars serve is Prometheus text plus `# EOF`). Health checks and
//! reflection are left out; every other gRPC status than OK is a failure,
//! as in Linkerd's success rate.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use prometheus_parse::{Scrape, Value};
use tokio::time::Instant;

/// A scrape that takes longer than this is given up: the next one comes soon.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Calls of one direction and peer, summed over methods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallCounts {
    pub requests: f64,
    pub responses: f64,
    /// Responses with grpc-status 0.
    pub ok: f64,
    /// Cumulative latency buckets `(le, count)`, sorted, ending with +Inf.
    pub buckets: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    pub inbound: bool,
    /// The caller (inbound) or the destination (outbound).
    pub peer: String,
}

/// One sidecar's counters at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarCounters {
    /// The mesh service (or client) the sidecar belongs to.
    pub service: String,
    pub calls: HashMap<CallKey, CallCounts>,
    /// By destination.
    pub retries: HashMap<String, f64>,
    pub refused: HashMap<String, f64>,
    pub ejections: HashMap<String, f64>,
}

/// Every sidecar's counters at one moment, by workload label.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub sidecars: HashMap<String, SidecarCounters>,
}

/// Counters from the text of one `/metrics` answer.
pub fn parse(service: &str, text: &str) -> SidecarCounters {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let mut counters = SidecarCounters {
        service: service.to_string(),
        ..Default::default()
    };
    // Reading from a str cannot fail.
    let Ok(scrape) = Scrape::parse(lines) else {
        return counters;
    };
    for sample in scrape.samples {
        // Health checks and reflection are the mesh's own machinery (probes
        // that fail while a peer warms up), not the services' traffic.
        if sample
            .labels
            .get("method")
            .is_some_and(|m| m.starts_with("grpc.health.") || m.starts_with("grpc.reflection."))
        {
            continue;
        }
        let label = |name: &str| sample.labels.get(name).unwrap_or("unknown").to_string();
        let number = match &sample.value {
            Value::Counter(v) | Value::Untyped(v) | Value::Gauge(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => f64::NAN,
        };
        let key = || CallKey {
            inbound: sample.labels.get("direction") == Some("inbound"),
            peer: label("peer"),
        };
        match sample.metric.as_str() {
            "meshwork_requests_total" => counters.calls.entry(key()).or_default().requests += number,
            "meshwork_responses_total" => {
                let calls = counters.calls.entry(key()).or_default();
                calls.responses += number;
                if sample.labels.get("grpc_status") == Some("0") {
                    calls.ok += number;
                }
            }
            "meshwork_response_latency_seconds" => {
                if let Value::Histogram(buckets) = &sample.value {
                    let calls = counters.calls.entry(key()).or_default();
                    let mut sorted: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
                    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                    if calls.buckets.is_empty() {
                        calls.buckets = sorted;
                    } else if calls.buckets.len() == sorted.len() {
                        for (sum, (_, count)) in calls.buckets.iter_mut().zip(sorted) {
                            sum.1 += count;
                        }
                    }
                }
            }
            "meshwork_outbound_retries_total" => *counters.retries.entry(label("destination")).or_default() += number,
            "meshwork_outbound_retries_refused_total" => {
                *counters.refused.entry(label("destination")).or_default() += number
            }
            "meshwork_outbound_endpoint_ejections_total" => {
                *counters.ejections.entry(label("destination")).or_default() += number
            }
            _ => {}
        }
    }
    counters
}

/// An HTTP/1 client for the sidecars' admin ports.
#[derive(Clone)]
pub struct AdminClient {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl AdminClient {
    pub fn new() -> Self {
        AdminClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The body of `GET http://{admin}{path}` if it answered 200 in time.
    pub async fn get(&self, admin: SocketAddr, path: &str) -> Option<String> {
        let uri: http::Uri = format!("http://{admin}{path}").parse().ok()?;
        let answer = tokio::time::timeout(TIMEOUT, async {
            let response = self.client.get(uri).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let body = response.into_body().collect().await.ok()?.to_bytes();
            String::from_utf8(body.to_vec()).ok()
        });
        answer.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_sum_over_methods_per_direction_and_peer() {
        let text = r#"# HELP meshwork_requests Calls received.
# TYPE meshwork_requests counter
meshwork_requests_total{direction="outbound",peer="users",method="GetUser"} 3
meshwork_requests_total{direction="outbound",peer="users",method="Login"} 2
meshwork_requests_total{direction="inbound",peer="demo",method="AddItem"} 7
# TYPE meshwork_responses counter
meshwork_responses_total{direction="outbound",peer="users",method="GetUser",grpc_status="0"} 2
meshwork_responses_total{direction="outbound",peer="users",method="GetUser",grpc_status="14"} 1
# TYPE meshwork_response_latency_seconds histogram
meshwork_response_latency_seconds_sum{direction="outbound",peer="users",method="GetUser"} 0.01
meshwork_response_latency_seconds_count{direction="outbound",peer="users",method="GetUser"} 3
meshwork_response_latency_seconds_bucket{le="0.001",direction="outbound",peer="users",method="GetUser"} 1
meshwork_response_latency_seconds_bucket{le="+Inf",direction="outbound",peer="users",method="GetUser"} 3
meshwork_response_latency_seconds_bucket{le="0.001",direction="outbound",peer="users",method="Login"} 2
meshwork_response_latency_seconds_bucket{le="+Inf",direction="outbound",peer="users",method="Login"} 2
# TYPE meshwork_outbound_retries counter
meshwork_outbound_retries_total{destination="users"} 4
# EOF
"#;
        let c = parse("cart", text);
        let out = &c.calls[&CallKey {
            inbound: false,
            peer: "users".into(),
        }];
        assert_eq!((out.requests, out.responses, out.ok), (5.0, 3.0, 2.0));
        assert_eq!(out.buckets, vec![(0.001, 3.0), (f64::INFINITY, 5.0)]);
        let inbound = &c.calls[&CallKey {
            inbound: true,
            peer: "demo".into(),
        }];
        assert_eq!(inbound.requests, 7.0);
        assert_eq!(c.retries["users"], 4.0);
    }
}
