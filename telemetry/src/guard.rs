//! What keeps span export running, and flushes it at the end: dropping the
//! guard exports the spans still queued and waits at most the export
//! timeout, so a missing collector never holds up a shutdown for long.

use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;

#[must_use = "dropping the guard stops span export"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
    service: String,
    /// How long the last export may take (the export timeout).
    flush_timeout: Duration,
}

impl Guard {
    pub(crate) fn new(provider: SdkTracerProvider, service: &str, flush_timeout: Duration) -> Self {
        Guard {
            provider: Some(provider),
            service: service.to_string(),
            flush_timeout,
        }
    }

    pub(crate) fn none() -> Self {
        Guard {
            provider: None,
            service: String::new(),
            flush_timeout: Duration::ZERO,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The batch processor's thread exports what is queued, through the
        // export runtime's thread ([`crate::runtime`]): neither needs the
        // caller's runtime, so blocking it here (a one-thread sidecar's
        // only thread) holds up nothing the flush waits for.
        let _ = provider.shutdown_with_timeout(self.flush_timeout);
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
