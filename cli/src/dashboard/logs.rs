//! The children's log lines, kept for the dashboard: a bounded ring that the
//! launcher's line forwarder appends to, searchable by workload, by trace id
//! and by text. Process-wide, so that the forwarder needs no handle to it.

use std::{
    collections::VecDeque,
    sync::{LazyLock, atomic::AtomicU64},
    time::SystemTime,
};

use parking_lot::Mutex;
use serde::Serialize;

/// How many lines are kept; older ones are dropped first.
pub const KEPT_LINES: usize = 10_000;
/// How much text is kept: the bound that holds whatever the lines' lengths
/// (each is at most 8 KiB, see `launcher::lines`). 10,000 lines of ~150
/// bytes fit in it.
pub const KEPT_BYTES: usize = 2 * 1024 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Increasing, so a client can ask only for what is new.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub workload: String,
    pub line: String,
}

impl LogLine {
    fn text_bytes(&self) -> usize {
        self.workload.len() + self.line.len()
    }
}

/// The kept lines, oldest first, and the bytes of text they hold.
#[derive(Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, entry: LogLine) {
        self.bytes += entry.text_bytes();
        self.lines.push_back(entry);
        while self.lines.len() > KEPT_LINES || self.bytes > KEPT_BYTES {
            let Some(oldest) = self.lines.pop_front() else { break };
            self.bytes -= oldest.text_bytes();
        }
    }
}

static RING: LazyLock<Mutex<Ring>> = LazyLock::new(Mutex::default);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Keeps one line a child printed; `label` may carry the table's padding and bar.
pub fn record(label: &str, line: &str) {
    let workload = label.trim().trim_end_matches('|').trim().to_string();
    let at_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    RING.lock().push(LogLine {
        seq,
        at_ms,
        workload,
        line: line.to_string(),
    });
}

/// What to look for; every given part must match.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Query {
    pub workload: Option<String>,
    /// A trace id (32 hex digits), as the sidecars and services log it.
    pub trace: Option<String>,
    /// Any text in the line.
    pub q: Option<String>,
    /// At most this many, the newest (200 by default).
    pub limit: Option<usize>,
}

/// The newest lines matching `query`, oldest first.
pub fn search(query: &Query) -> Vec<LogLine> {
    let limit = query.limit.unwrap_or(200).min(KEPT_LINES);
    let ring = RING.lock();
    let mut found: Vec<LogLine> = ring
        .lines
        .iter()
        .rev()
        .filter(|l| {
            query
                .workload
                .as_deref()
                .is_none_or(|w| w.is_empty() || l.workload == w)
        })
        .filter(|l| {
            query
                .trace
                .as_deref()
                .is_none_or(|t| t.is_empty() || l.line.contains(t))
        })
        .filter(|l| query.q.as_deref().is_none_or(|q| l.line.contains(q)))
        .take(limit)
        .cloned()
        .collect();
    found.reverse();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, text: String) -> LogLine {
        LogLine {
            seq,
            at_ms: 0,
            workload: "w".into(),
            line: text,
        }
    }

    #[test]
    fn the_ring_holds_its_bounds_in_lines_and_in_bytes() {
        let mut ring = Ring::default();
        for seq in 0..(KEPT_LINES as u64 + 10) {
            ring.push(line(seq, "short".into()));
        }
        assert_eq!(ring.lines.len(), KEPT_LINES);
        assert_eq!(ring.lines.front().map(|l| l.seq), Some(10), "the oldest go first");

        let long = "x".repeat(8 * 1024);
        for seq in 0..1_000 {
            ring.push(line(seq, long.clone()));
        }
        assert!(ring.bytes <= KEPT_BYTES, "{} bytes kept", ring.bytes);
        assert_eq!(ring.bytes, ring.lines.iter().map(LogLine::text_bytes).sum::<usize>());
        assert!(
            ring.lines.len() >= KEPT_BYTES / (long.len() + 1) - 1,
            "{} lines",
            ring.lines.len()
        );
    }

    #[test]
    fn lines_are_found_by_workload_and_trace() {
        record("   cart-proxy |", "call 4bf92f3577b34da6a3ce929d0e0e4736 ok");
        record("users |", "started");
        let by_trace = search(&Query {
            trace: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            ..Default::default()
        });
        assert_eq!(by_trace.len(), 1);
        assert_eq!(by_trace[0].workload, "cart-proxy");
        let by_workload = search(&Query {
            workload: Some("users".into()),
            q: Some("start".into()),
            ..Default::default()
        });
        assert!(by_workload.iter().all(|l| l.workload == "users"));
        assert!(!by_workload.is_empty());
    }
}
