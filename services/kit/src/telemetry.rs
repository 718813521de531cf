//! Logging and tracing set-up for the services: the one place a later OpenTelemetry
//! exporter will be added.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs a `fmt` subscriber filtered by `RUST_LOG` (default `info`).
///
/// Safe to call more than once (the CLI and a test may both call it): only the first
/// call installs anything.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // try_init fails only when a global subscriber is already set, which is fine.
    let _ = tracing_subscriber::registry()
        .with(filter)
        // Colour only on a terminal: under `mesh up` the output is piped and
        // prefixed, and escape codes would end up in log files.
        .with(
            fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn twice_is_harmless() {
        super::init_tracing();
        super::init_tracing();
    }
}
