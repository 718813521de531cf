//! Setting up a process's telemetry once: a `fmt` log layer on stderr
//! filtered by `RUST_LOG`, and (unless switched off by `OTEL_SDK_DISABLED` or
//! `OTEL_TRACES_EXPORTER=none`) an OpenTelemetry tracer provider exporting
//! over OTLP, bridged to `tracing` spans by `tracing-opentelemetry`.

use std::{io::IsTerminal, sync::OnceLock};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    Resource,
    trace::{SdkTracer, SdkTracerProvider},
};
use tracing_subscriber::{EnvFilter, Layer, filter::LevelFilter, fmt, prelude::*};

use crate::{Guard, drops, export};

/// The instrumentation scope of every span Meshwork makes.
const SCOPE: &str = "meshwork";

/// The process's tracer provider, set by [`init`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Sets up logging and span export for a process named `service_name` (the
/// OpenTelemetry `service.name`: `cart`, `cart-proxy`). Call it once, early;
/// keep the returned guard alive until the end: dropping it flushes the
/// spans still queued (waiting at most the export timeout). Export runs on
/// a thread of its own, so the caller's runtime may have a single thread.
///
/// Later calls (a test calling it twice) change nothing and return a guard
/// that does nothing.
pub fn init(service_name: &str) -> Guard {
    let mut installed = None;
    PROVIDER.get_or_init(|| {
        let provider = build_provider(service_name);
        installed = Some(provider.clone());
        provider
    });
    let Some(provider) = installed else {
        return Guard::none();
    };
    let tracer = provider.tracer(SCOPE);
    // Spans reach the exporter whatever RUST_LOG says: it filters the log
    // output only. `info` keeps the libraries' debug spans out of traces.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(LevelFilter::INFO);
    // Fails only when a subscriber is already set (a test set its own).
    let _ = tracing_subscriber::registry().with(log_layer()).with(otel).try_init();
    opentelemetry::global::set_text_map_propagator(crate::propagation::composite());
    Guard::new(
        provider.clone(),
        service_name,
        export::ExportSettings::from_env().timeout,
    )
}

/// Logs only, no span export: for tests and tools. Safe to call repeatedly.
pub fn init_logs() {
    let _ = tracing_subscriber::registry().with(log_layer()).try_init();
}

/// `fmt` on stderr, filtered by `RUST_LOG` (default `info`). Colour only on
/// a terminal: under `mesh up` the output is piped and prefixed, and escape
/// codes would end up in log files.
fn log_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter)
}

fn build_provider(service_name: &str) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder().with_resource(
        Resource::builder_empty()
            .with_service_name(service_name.to_string())
            .build(),
    );
    if export::disabled() {
        return builder.build();
    }
    match export::processor(&export::ExportSettings::from_env(), drops::counters().clone()) {
        Ok(processor) => builder.with_span_processor(processor).build(),
        Err(error) => {
            // Logging is not set up yet; stderr is where it would go.
            let cause = std::error::Error::source(&error)
                .map(|cause| format!(": {cause}"))
                .unwrap_or_default();
            eprintln!("{service_name}: {error}{cause}");
            builder.build()
        }
    }
}

/// The tracer for spans made directly with the OpenTelemetry API (the
/// sidecar's). Before [`init`] (in-process tests) it is a tracer whose
/// spans go nowhere, but whose contexts still propagate.
pub fn tracer() -> SdkTracer {
    static UNEXPORTED: OnceLock<SdkTracerProvider> = OnceLock::new();
    PROVIDER
        .get()
        .unwrap_or_else(|| UNEXPORTED.get_or_init(|| SdkTracerProvider::builder().build()))
        .tracer(SCOPE)
}
