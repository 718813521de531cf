//! What keeps span export running, and flushes it at the end: dropping the
//! guard exports the spans still queued, waiting at most a few seconds, so a
//! missing collector never holds up a shutdown.

use std::{sync::mpsc, time::Duration};

use opentelemetry_sdk::trace::SdkTracerProvider;

/// How long shutdown waits for the last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

#[must_use = "dropping the guard stops span export"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
    service: String,
}

impl Guard {
    pub(crate) fn new(provider: SdkTracerProvider, service: &str) -> Self {
        Guard {
            provider: Some(provider),
            service: service.to_string(),
        }
    }

    pub(crate) fn none() -> Self {
        Guard {
            provider: None,
            service: String::new(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The export runs on the batch processor's own thread and needs the
        // tokio runtime's other threads for its I/O; wait for it from a
        // separate thread so that a runtime thread dropping the guard cannot
        // block the I/O it is waiting for past the timeout.
        let (done, finished) = mpsc::channel();
        let flush = std::thread::Builder::new().name("span-flush".into()).spawn(move || {
            let _ = done.send(provider.shutdown_with_timeout(FLUSH_TIMEOUT));
        });
        if flush.is_ok() {
            let _ = finished.recv_timeout(FLUSH_TIMEOUT + Duration::from_millis(500));
        }
        let drops = crate::span_drops();
        if drops.total() > 0 {
            tracing::warn!(
                service = %self.service,
                queue_full = drops.queue_full,
                export_failed = drops.export_failed,
                "spans were dropped"
            );
        }
    }
}
