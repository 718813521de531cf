//! The optional JSON access log: one line per call on standard output, with
//! the trace id to find the call in Jaeger. The request path only queues a
//! small fixed-size record (no formatting, no I/O); a writer task formats
//! and writes. The queue is bounded: when the writer falls behind (a slow
//! pipe), lines are dropped and counted rather than slowing calls.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanId, TraceId};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::{
    io::{AsyncWriteExt, BufWriter},
    sync::mpsc,
};

use super::metrics::Direction;

/// Lines waiting for the writer at most.
const QUEUE: usize = 4096;

/// One call, as logged.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub start: SystemTime,
    pub direction: Direction,
    pub peer: &'static str,
    pub method: &'static str,
    pub grpc_status: u8,
    pub duration: Duration,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub bytes: u64,
    pub retries: u32,
}

/// The line's shape.
#[derive(Serialize)]
struct Line<'a> {
    timestamp: &'a str,
    direction: &'static str,
    peer: &'static str,
    method: &'static str,
    grpc_status: u8,
    duration_ms: f64,
    trace_id: &'a str,
    span_id: &'a str,
    response_bytes: u64,
    retries: u32,
}

#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: mpsc::Sender<Record>,
    dropped: Counter,
}

impl AccessLog {
    /// Starts the writer task; `dropped` counts lines that did not fit.
    /// `None` outside a tokio runtime.
    pub fn start(dropped: Counter) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (queue, records) = mpsc::channel(QUEUE);
        // Ends when every sender (every stack holding the log) is gone.
        runtime.spawn(write(records));
        Some(AccessLog { queue, dropped })
    }

    pub fn record(&self, record: Record) {
        if self.queue.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

async fn write(mut records: mpsc::Receiver<Record>) {
    let mut out = BufWriter::new(tokio::io::stdout());
    let mut line = Vec::with_capacity(512);
    while let Some(record) = records.recv().await {
        format(&record, &mut line);
        // Write what is queued, then flush once: one write per burst.
        while let Ok(next) = records.try_recv() {
            format(&next, &mut line);
        }
        if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
            // Standard output is gone (closed pipe); nothing to log to.
            return;
        }
        line.clear();
    }
}

/// Appends `record` as one JSON line to `out`.
pub fn format(record: &Record, out: &mut Vec<u8>) {
    let timestamp = humantime::format_rfc3339_micros(record.start).to_string();
    let trace_id = record.trace_id.to_string();
    let span_id = record.span_id.to_string();
    let line = Line {
        timestamp: &timestamp,
        direction: record.direction.as_str(),
        peer: record.peer,
        method: record.method,
        grpc_status: record.grpc_status,
        duration_ms: record.duration.as_secs_f64() * 1000.0,
        trace_id: &trace_id,
        span_id: &span_id,
        response_bytes: record.bytes,
        retries: record.retries,
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_line_per_record() {
        let record = Record {
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            direction: Direction::Outbound,
            peer: "catalog",
            method: "shop.catalog.v1.CatalogService/GetProduct",
            grpc_status: 5,
            duration: Duration::from_micros(1500),
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("id"),
            span_id: SpanId::from_hex("00f067aa0ba902b7").expect("id"),
            bytes: 42,
            retries: 1,
        };
        let mut out = Vec::new();
        format(&record, &mut out);
        format(&record, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let value: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(value["timestamp"], "2023-11-14T22:13:20.123000Z");
        assert_eq!(value["direction"], "outbound");
        assert_eq!(value["peer"], "catalog");
        assert_eq!(value["grpc_status"], 5);
        assert_eq!(value["duration_ms"], 1.5);
        assert_eq!(value["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(value["span_id"], "00f067aa0ba902b7");
        assert_eq!(value["response_bytes"], 42);
    }
}
