//! Counting the spans that never reach the collector. The SDK's
//! `BatchSpanProcessor` drops a span when its queue is full but keeps that
//! count private (it only logs it at shutdown), and it gives no hook on a
//! failed export either. So two thin wrappers keep the count:
//!
//! - [`CountingProcessor`] sits in front of the batch processor and admits a
//!   span only while fewer than `capacity` spans are waiting; the batch
//!   processor's own queue has that same capacity, so it never drops, and
//!   every drop happens (and is counted) here.
//! - [`CountingExporter`] sits behind it: it marks spans as no longer waiting
//!   when a batch is handed over, and counts the spans of a failed export.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor},
};

/// How many spans this process could not export, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanDrops {
    /// The export queue was full (the collector is slow or unreachable).
    pub queue_full: u64,
    /// The collector could not be reached or refused the batch.
    pub export_failed: u64,
}

impl SpanDrops {
    pub fn total(&self) -> u64 {
        self.queue_full + self.export_failed
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    queue_full: AtomicU64,
    export_failed: AtomicU64,
    /// Spans admitted to the batch processor and not yet handed to the exporter.
    waiting: AtomicUsize,
    /// Whether a failed export has been logged: the first is, the rest only counted.
    export_failure_logged: AtomicBool,
}

impl Counters {
    pub(crate) fn drops(&self) -> SpanDrops {
        SpanDrops {
            queue_full: self.queue_full.load(Ordering::Relaxed),
            export_failed: self.export_failed.load(Ordering::Relaxed),
        }
    }
}

/// The process's counters: one exporter per process, so one set.
pub(crate) fn counters() -> &'static Arc<Counters> {
    static COUNTERS: OnceLock<Arc<Counters>> = OnceLock::new();
    COUNTERS.get_or_init(Arc::default)
}

/// The spans this process has dropped so far.
pub fn span_drops() -> SpanDrops {
    counters().drops()
}

#[derive(Debug)]
pub struct CountingProcessor {
    inner: BatchSpanProcessor,
    capacity: usize,
    counters: Arc<Counters>,
}

impl CountingProcessor {
    /// `inner` must have been built with a queue of `capacity` spans around a
    /// [`CountingExporter`].
    pub(crate) fn new(inner: BatchSpanProcessor, capacity: usize, counters: Arc<Counters>) -> Self {
        CountingProcessor {
            inner,
            capacity,
            counters,
        }
    }
}

impl SpanProcessor for CountingProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // Reserve a place first, so two threads cannot both take the last one.
        if self.counters.waiting.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.counters.waiting.fetch_sub(1, Ordering::AcqRel);
            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
    /// Where spans go, for the one log line about a failing collector.
    endpoint: String,
    counters: Arc<Counters>,
}

impl<E> CountingExporter<E> {
    pub(crate) fn new(inner: E, endpoint: String, counters: Arc<Counters>) -> Self {
        CountingExporter {
            inner,
            endpoint,
            counters,
        }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // Called on the batch processor's own thread.
        crate::runtime::yield_to_calls();
        let count = batch.len();
        // These spans have left the queue: make room for new ones now, even
        // though the export may take until its timeout.
        self.counters.waiting.fetch_sub(count, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            self.counters
                .export_failed
                .fetch_add(u64::try_from(count).unwrap_or(u64::MAX), Ordering::Relaxed);
            if !self.counters.export_failure_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    endpoint = %self.endpoint,
                    %error,
                    "cannot export spans; further failures are only counted"
                );
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
