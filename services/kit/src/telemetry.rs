//! Logging and tracing set-up for the services, delegating to
//! `meshwork-telemetry` (the same set-up the sidecars use), so the four
//! services keep one place for it.

pub use meshwork_telemetry::Guard as TelemetryGuard;

/// Logs to stderr and exports spans over OTLP as `service_name` (the
/// OpenTelemetry `service.name`, e.g. `cart`). Keep the guard until the
/// service stops: dropping it flushes the last spans, waiting a bounded time.
/// Only the first call in a process does anything.
pub fn init_telemetry(service_name: &str) -> TelemetryGuard {
    meshwork_telemetry::init(service_name)
}

/// Logs only (filtered by `RUST_LOG`, default `info`), no span export: for
/// tests, and for a service started without [`init_telemetry`].
///
/// Safe to call more than once (the CLI and a test may both call it): only the first
/// call installs anything.
pub fn init_tracing() {
    meshwork_telemetry::init_logs();
}

#[cfg(test)]
mod tests {
    #[test]
    fn twice_is_harmless() {
        super::init_tracing();
        super::init_tracing();
    }
}
