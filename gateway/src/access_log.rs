//! The JSON access log: one line per request on standard output, with the
//! trace id to find it in the dashboard or Jaeger. Requests only queue a
//! record; a writer thread formats and writes, and when it falls behind (a
//! slow pipe) lines are dropped and counted rather than slowing requests.

use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::mpsc;

const QUEUE: usize = 4096;
/// How long the writer gathers lines between two writes under load: a line
/// is late by at most this, and the queue holds more than this many
/// milliseconds of lines at any rate the gateway serves.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Debug, Serialize)]
pub struct Line {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub protocol: &'static str,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "shared_str")]
    pub rpc: Option<std::sync::Arc<str>>,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<&'static str>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub trace_id: String,
}

fn shared_str<S: serde::Serializer>(value: &Option<std::sync::Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(text) => s.serialize_str(text),
        None => s.serialize_none(),
    }
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
    s.serialize_str(&humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + since).to_string())
}

#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: mpsc::Sender<Line>,
    dropped: Counter,
}

/// Where the lines go: standard output for the gateway; standard error for
/// `mesh mcp --stdio`, whose standard output carries the protocol.
#[derive(Debug, Clone, Copy)]
pub enum Sink {
    Stdout,
    Stderr,
}

impl AccessLog {
    /// Starts the writer thread; it ends when every sender is gone. A
    /// thread of its own, not tokio's stdout: that hands every write to the
    /// blocking pool, a thread wake-up per line, which measured as most of the
    /// gateway's CPU per call.
    pub fn start(sink: Sink, dropped: Counter) -> Self {
        let (queue, lines) = mpsc::channel::<Line>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || match sink {
                Sink::Stdout => write_bursts(lines, || std::io::stdout().lock()),
                Sink::Stderr => write_bursts(lines, || std::io::stderr().lock()),
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the access log's writer; no access log");
        }
        AccessLog { queue, dropped }
    }

    pub fn write(&self, line: Line) {
        if self.queue.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

/// Writes each burst of queued lines with one flush. The stream is locked
/// only while a burst is written, never while waiting: anything else in the
/// process writing to it (rmcp's stdio transport, a panic message) must not
/// wait on an idle log.
///
/// After a burst the writer sleeps [`GATHER`] instead of waiting on the
/// queue: a request that queues a line for a waiting writer pays a futex
/// wake-up and the writer a context switch and a `write` per line, which
/// measured as a tenth of the gateway's CPU on a cache hit. Only an idle
/// log waits (the next line wakes it).
fn write_bursts<W: std::io::Write>(mut lines: mpsc::Receiver<Line>, lock: impl Fn() -> W) {
    let mut buffer = Vec::with_capacity(64 * 1024);
    while let Some(line) = lines.blocking_recv() {
        let mut next = Some(line);
        while next.is_some() {
            buffer.clear();
            while let Some(line) = next {
                let _ = serde_json::to_writer(&mut buffer, &line);
                buffer.push(b'\n');
                next = lines.try_recv().ok();
            }
            let mut out = lock();
            if out.write_all(&buffer).and_then(|()| out.flush()).is_err() {
                return;
            }
            drop(out);
            std::thread::sleep(GATHER);
            next = lines.try_recv().ok();
        }
    }
}
