//! Where spans go: OTLP over gRPC to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://127.0.0.1:4317` (Jaeger's OTLP
//! port), through a batch processor with a bounded queue whose drops are
//! counted. The standard `OTEL_BSP_*` variables tune the batching (tests set
//! `OTEL_BSP_SCHEDULE_DELAY=100` to see spans quickly).

use std::{sync::Arc, time::Duration};

use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};

use crate::{
    drops::{Counters, CountingExporter, CountingProcessor},
    otlp::{self, OtlpExporter},
};

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4317";
/// Spans that may wait for export. A quarter of the SDK's 2,048: every
/// workload runs a sidecar, and while the collector is slow or down a full
/// queue is memory every pod pays (a span waiting is about 600 bytes);
/// linkerd2-proxy buffers 100. An export starts as soon as half of it is
/// filled, so a collector that keeps up sees no drops at tens of thousands
/// of spans a second.
const DEFAULT_QUEUE: usize = 512;
/// Spans per export: half the queue, at most the SDK's default.
const MAX_BATCH: usize = 512;
/// The SDK's default time between exports when fewer spans arrive.
const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_secs(5);
/// How long one export may take before it counts as failed. Short: the
/// collector is normally on the same host or network, and while an export
/// hangs the queue fills and spans are dropped.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why spans cannot be exported (the process runs on without them).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot start the span export thread; spans will not be exported")]
    Thread(#[source] std::io::Error),
    #[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
    Build { endpoint: String, reason: String },
}

/// Whether the standard switches turn trace export off.
pub fn disabled() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default().trim().to_ascii_lowercase();
    var("OTEL_SDK_DISABLED") == "true" || var("OTEL_TRACES_EXPORTER") == "none"
}

/// How spans are exported.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub endpoint: String,
    /// Spans that may wait for export; more are dropped (and counted).
    pub queue: usize,
    /// How long one export may take before it counts as failed.
    pub timeout: Duration,
    /// How often a batch goes out.
    pub schedule_delay: Duration,
}

impl ExportSettings {
    /// From the standard variables (see the module's description).
    pub fn from_env() -> Self {
        ExportSettings {
            endpoint: endpoint(),
            queue: env_number("OTEL_BSP_MAX_QUEUE_SIZE")
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .unwrap_or(DEFAULT_QUEUE),
            timeout: env_number("OTEL_EXPORTER_OTLP_TIMEOUT")
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_EXPORT_TIMEOUT),
            schedule_delay: env_number("OTEL_BSP_SCHEDULE_DELAY")
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_SCHEDULE_DELAY),
        }
    }
}

/// The collector's address, by the standard variables.
fn endpoint() -> String {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .map(|value| value.trim().to_string())
        .find(|value| !value.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The span processor that exports as `settings` say. Each batch is
/// encoded on the batch processor's thread and sent from the export runtime
/// ([`crate::runtime`]), which holds the collector's connection: never on
/// the caller's runtime.
pub fn processor(settings: &ExportSettings, counters: Arc<Counters>) -> Result<CountingProcessor, ExportError> {
    let runtime = crate::runtime::handle().map_err(ExportError::Thread)?;
    let endpoint = settings.endpoint.clone();
    let exporter =
        OtlpExporter::new(&endpoint, otlp::headers_from_env(), settings.timeout, runtime).map_err(|reason| {
            ExportError::Build {
                endpoint: endpoint.clone(),
                reason,
            }
        })?;
    // The builder's defaults read the remaining OTEL_BSP_* variables.
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(settings.queue)
        .with_scheduled_delay(settings.schedule_delay)
        .with_max_export_batch_size((settings.queue / 2).clamp(1, MAX_BATCH))
        .build();
    let batch = BatchSpanProcessor::new(CountingExporter::new(exporter, endpoint, counters.clone()), config);
    Ok(CountingProcessor::new(batch, settings.queue, counters))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    fn provider(endpoint: String, counters: &Arc<Counters>) -> SdkTracerProvider {
        let settings = ExportSettings {
            endpoint,
            queue: 32,
            timeout: Duration::from_millis(500),
            schedule_delay: Duration::from_millis(10),
        };
        let processor = processor(&settings, counters.clone()).expect("processor");
        SdkTracerProvider::builder().with_span_processor(processor).build()
    }

    /// A collector that accepts connections and never answers: every
    /// export hangs until its timeout, the worst case for the caller.
    async fn black_hole() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_collector_costs_spans_not_time() {
        let counters = Arc::new(Counters::default());
        let provider = provider(black_hole().await, &counters);
        let tracer = provider.tracer("test");
        let started = Instant::now();
        for _ in 0..2000 {
            tracer.start("call").end();
        }
        let elapsed = started.elapsed();
        let drops = counters.drops();
        // The queue holds 32 (plus one batch in the stuck export); the rest
        // were dropped at once and counted.
        assert!(drops.queue_full >= 2000 - 2 * 32, "{drops:?}");
        assert!(elapsed < Duration::from_secs(1), "2000 spans took {elapsed:?}");
        eprintln!("2000 spans ended in {elapsed:?} with the collector stuck; {drops:?}");
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(2)))
            .await
            .expect("shutdown")
            .ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_collector_counts_failed_exports() {
        // A port nothing listens on: connections are refused.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        let counters = Arc::new(Counters::default());
        let provider = provider(format!("http://{closed}"), &counters);
        let tracer = provider.tracer("test");
        for _ in 0..10 {
            tracer.start("call").end();
        }
        let flushed = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            provider
        })
        .await
        .expect("flush");
        let deadline = Instant::now() + Duration::from_secs(5);
        while counters.drops().export_failed < 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            counters.drops(),
            crate::SpanDrops {
                queue_full: 0,
                export_failed: 10
            }
        );
        tokio::task::spawn_blocking(move || flushed.shutdown_with_timeout(Duration::from_secs(2)))
            .await
            .expect("shutdown")
            .ok();
    }
}
