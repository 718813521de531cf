//! The launcher's own trace collector: when no collector is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` unset), `mesh up` receives its children's
//! spans over OTLP/gRPC on a loopback port and keeps the most recent
//! [`KEPT_TRACES`] traces in memory (at most [`SPANS_PER_TRACE`] spans
//! each), for the dashboard and `mesh trace`. Spans reach it through the
//! sidecars' and services' batch exporters, off every request's path; an
//! export is answered as soon as its spans are filed.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
};

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
};
use parking_lot::Mutex;
use serde::Serialize;

/// Traces kept; the oldest (by first span received) goes first.
pub const KEPT_TRACES: usize = 500;
/// Spans kept per trace; a checkout has about twenty.
pub const SPANS_PER_TRACE: usize = 1_000;

/// One span, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// The resource's `service.name`: `cart`, `cart-proxy`.
    pub service: String,
    /// `server`, `client`, `internal`, …
    pub kind: &'static str,
    pub start_ns: u64,
    pub end_ns: u64,
    pub error: bool,
    /// Its depth in the trace's tree (0 for the root), set when a trace is read.
    pub depth: usize,
}

/// A trace in the list.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub trace_id: String,
    /// The root span's name (or the earliest span's, while the root is missing).
    pub root: String,
    pub services: Vec<String>,
    pub spans: usize,
    pub duration_seconds: f64,
    pub error: bool,
    pub start_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub trace_id: String,
    /// Parents before children, siblings by start time.
    pub spans: Vec<Span>,
}

#[derive(Default)]
struct Store {
    order: VecDeque<String>,
    traces: HashMap<String, Vec<Span>>,
}

/// The kept traces; cheap to clone.
#[derive(Clone, Default)]
pub struct Traces {
    store: Arc<Mutex<Store>>,
}

impl Traces {
    fn file(&self, trace_id: String, span: Span) {
        let mut store = self.store.lock();
        if !store.traces.contains_key(&trace_id) {
            if store.order.len() == KEPT_TRACES
                && let Some(oldest) = store.order.pop_front()
            {
                store.traces.remove(&oldest);
            }
            store.order.push_back(trace_id.clone());
        }
        let spans = store.traces.entry(trace_id).or_default();
        if spans.len() < SPANS_PER_TRACE {
            spans.push(span);
        }
    }

    /// The kept traces, the latest started first.
    pub fn list(&self) -> Vec<Summary> {
        let mut list: Vec<Summary> = {
            let store = self.store.lock();
            store.traces.iter().map(|(id, spans)| summarize(id, spans)).collect()
        };
        list.sort_by(|a, b| b.start_ms.cmp(&a.start_ms).then_with(|| a.trace_id.cmp(&b.trace_id)));
        list
    }

    /// The latest trace whose root span's name ends with `name`, waiting a
    /// few seconds for the exporters' next batch (none when spans go elsewhere).
    pub async fn wait_for_root(&self, name: &str) -> Option<String> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let found = self.list().into_iter().find(|t| t.root.ends_with(name));
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found.map(|t| t.trace_id);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// One trace, its spans in tree order; `last` is the one that started last.
    pub fn get(&self, id: &str) -> Option<Trace> {
        let store = self.store.lock();
        let id = match id {
            "last" => store
                .traces
                .iter()
                .max_by_key(|(_, spans)| spans.iter().map(|s| s.start_ns).min())?
                .0
                .clone(),
            id => id.to_ascii_lowercase(),
        };
        let spans = store.traces.get(&id)?.clone();
        Some(Trace {
            trace_id: id,
            spans: tree_order(spans),
        })
    }
}

fn summarize(id: &str, spans: &[Span]) -> Summary {
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(start);
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let root = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty() || !ids.contains(s.parent_span_id.as_str()))
        .min_by_key(|s| s.start_ns);
    let mut services: Vec<String> = spans.iter().map(|s| s.service.clone()).collect();
    services.sort();
    services.dedup();
    Summary {
        trace_id: id.to_string(),
        root: root.map(|s| format!("{}: {}", s.service, s.name)).unwrap_or_default(),
        services,
        spans: spans.len(),
        duration_seconds: end.saturating_sub(start) as f64 / 1e9,
        error: spans.iter().any(|s| s.error),
        start_ms: start / 1_000_000,
    }
}

/// Parents before their children, siblings by start; a span whose parent
/// is missing counts as a root.
fn tree_order(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| s.start_ns);
    let ids: std::collections::HashSet<String> = spans.iter().map(|s| s.span_id.clone()).collect();
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        if s.parent_span_id.is_empty() || !ids.contains(&s.parent_span_id) {
            roots.push(i);
        } else {
            children.entry(s.parent_span_id.as_str()).or_default().push(i);
        }
    }
    let mut ordered = Vec::with_capacity(spans.len());
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        let mut span = spans[i].clone();
        span.depth = depth;
        if let Some(kids) = children.get(spans[i].span_id.as_str()) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
        ordered.push(span);
    }
    ordered
}

/// Lower-case hex, in one allocation: every span received has three ids
/// turned into text, and a `format!` per byte would make forty allocations.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

fn kind(k: i32) -> &'static str {
    match k {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                let span_out = Span {
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    service: service.clone(),
                    kind: kind(span.kind),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano.max(span.start_time_unix_nano),
                    // OTLP's STATUS_CODE_ERROR.
                    error: span.status.is_some_and(|s| s.code == 2),
                    depth: 0,
                };
                self.file(hex(&span.trace_id), span_out);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves OTLP/gRPC on a free loopback port for `traces`; returns its address.
pub async fn receive(traces: Traces) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the launcher's trace collector")?;
    let addr = listener.local_addr().context("reading the trace collector's address")?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(traces))
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = served {
            eprintln!("mesh: the trace collector stopped: {e}");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: &str, start: u64) -> Span {
        Span {
            span_id: id.into(),
            parent_span_id: parent.into(),
            name: id.into(),
            service: "s".into(),
            kind: "server",
            start_ns: start,
            end_ns: start + 10,
            error: false,
            depth: 0,
        }
    }

    #[test]
    fn ids_in_lower_case_hex() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn spans_come_in_tree_order_with_depths() {
        let ordered = tree_order(vec![
            span("c2", "b", 5),
            span("b", "a", 2),
            span("a", "", 1),
            span("c1", "b", 3),
            span("d", "a", 20),
        ]);
        let got: Vec<(&str, usize)> = ordered.iter().map(|s| (s.span_id.as_str(), s.depth)).collect();
        assert_eq!(got, [("a", 0), ("b", 1), ("c1", 2), ("c2", 2), ("d", 1)]);
    }

    #[test]
    fn the_oldest_trace_goes_when_the_store_is_full() {
        let traces = Traces::default();
        for t in 0..=KEPT_TRACES {
            traces.file(format!("{t:032x}"), span("a", "", t as u64));
        }
        let list = traces.list();
        assert_eq!(list.len(), KEPT_TRACES);
        assert!(traces.get(&format!("{:032x}", 0)).is_none());
        assert_eq!(
            traces.get("last").map(|t| t.trace_id),
            Some(format!("{KEPT_TRACES:032x}"))
        );
    }
}
