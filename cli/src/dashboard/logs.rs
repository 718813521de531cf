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

/// How many lines are kept; older ones are dropped first. At ~150 bytes a
/// line this is about 1.5 MB at most.
pub const KEPT_LINES: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Increasing, so a client can ask only for what is new.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub workload: String,
    pub line: String,
}

static RING: LazyLock<Mutex<VecDeque<LogLine>>> = LazyLock::new(|| Mutex::new(VecDeque::with_capacity(1024)));
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Keeps one line a child printed; `label` may carry the table's padding and bar.
pub fn record(label: &str, line: &str) {
    let workload = label.trim().trim_end_matches('|').trim().to_string();
    let at_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let entry = LogLine {
        seq,
        at_ms,
        workload,
        line: line.to_string(),
    };
    let mut ring = RING.lock();
    if ring.len() == KEPT_LINES {
        ring.pop_front();
    }
    ring.push_back(entry);
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
