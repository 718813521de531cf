//! The span exporter's own runtime: one tokio thread, `span-export`, that
//! carries the OTLP channel's connections, the batch's protobuf encoding and
//! its I/O. On the process's runtime those ran between a one-thread
//! sidecar's calls and stalled the ones queued behind them (the p99 tail of
//! issue 14), and a shutdown that blocked that runtime to flush waited on
//! I/O it was itself holding up, until the flush timed out and the spans
//! were lost. A thread of its own fixes both at once.

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
    std::thread::Builder::new()
        .name("span-export".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    // Two first callers at once start two threads; one handle wins and the
    // other thread idles, which costs a parked thread, not correctness.
    Ok(HANDLE.get_or_init(|| handle).clone())
}
