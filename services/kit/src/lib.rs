//! What every example service shares: command-line arguments, tracing, serving with
//! health and reflection, graceful shutdown, the sidecar channel and SQLite start-up.
//!
//! One place for all of it, so the four services stay small and a later change (for
//! example OpenTelemetry export in `telemetry`, or deadline propagation next to the
//! trace-context forwarding in `propagate`) is made once.

mod args;
mod channel;
pub mod db;
pub mod end_user;
mod money;
pub mod propagate;
mod server;
mod server_span;
mod status;
mod telemetry;
pub mod testing;
pub mod time;

pub use args::{ServeArgs, db_path, parse_loopback};
pub use channel::{CONNECT_TIMEOUT, sidecar_channel};
pub use money::is_currency_code;
pub use server::{DRAIN_TIMEOUT, ServeError, bind, serve, serve_on, shutdown_signal};
pub use server_span::ServerSpanLayer;
pub use status::internal;
pub use telemetry::{TelemetryGuard, init_telemetry, init_tracing};
