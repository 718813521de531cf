//! The span exporter's own runtime: one tokio thread, `span-export`, that
//! carries the OTLP channel's connections, the batch's protobuf encoding and
//! its I/O. On the process's runtime those ran between a one-thread
//! sidecar's calls and stalled the ones queued behind them (the p99 tail of
//! issue 14), and a shutdown that blocked that runtime to flush waited on
//! I/O it was itself holding up, until the flush timed out and the spans
//! were lost. A thread of its own fixes both at once.
//!
//! That thread, and the batch processor's that converts and hands over each
//! batch, run at the lowest priority (nice 19): on a machine whose cores the
//! calls keep busy, a call's thread waking up takes the core from them at
//! once instead of queueing behind a batch's encoding (the p99 tail that was
//! left with a collector listening). They are never starved: nice 19 still
//! gets a share of a busy core, so spans keep flowing under load.

use std::sync::OnceLock;

use tokio::runtime::Handle;

/// The export runtime, started on first use and kept for the process's
/// life (a daemon thread: it holds nothing that must outlive `main`).
pub(crate) fn handle() -> std::io::Result<Handle> {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new().name("span-export".into()).spawn(move || {
        yield_to_calls();
        runtime.block_on(std::future::pending::<()>())
    })?;
    // Two first callers at once start two threads; one handle wins and the
    // other thread idles, which costs a parked thread, not correctness.
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Lowers the calling thread to the lowest priority of the normal policy,
/// once per thread. Lowering needs no privilege; if the OS refuses anyway,
/// the thread runs on at its priority and that is said once, at debug level.
pub(crate) fn yield_to_calls() {
    use std::cell::Cell;
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    thread_local!(static LOWERED: Cell<bool> = const { Cell::new(false) });
    if LOWERED.replace(true) {
        return;
    }
    let lowest = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
    if let Err(error) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, lowest) {
        tracing::debug!(?error, "cannot lower the priority of a span export thread");
    }
}

#[cfg(test)]
mod tests {
    /// The nice value of the calling thread, from /proc (field 19 of its stat).
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
        let (_, rest) = stat.rsplit_once(')').expect("a stat line");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[19 - 3].parse().expect("nice is a number")
    }

    #[test]
    fn export_threads_run_at_the_lowest_priority_and_others_do_not() {
        let before = std::thread::spawn(own_nice).join().expect("thread");
        let lowered = std::thread::spawn(|| {
            super::yield_to_calls();
            super::yield_to_calls();
            own_nice()
        })
        .join()
        .expect("thread");
        let after = std::thread::spawn(own_nice).join().expect("thread");
        assert_eq!(lowered, 19);
        assert_eq!(after, before, "only the calling thread is lowered");
    }
}
