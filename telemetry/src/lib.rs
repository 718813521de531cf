//! Telemetry shared by the sidecars and the services: logs to stderr and
//! OpenTelemetry spans exported over OTLP/gRPC, set up once per process with
//! [`init`]; W3C trace-context propagation that also accepts B3 from outside
//! ([`propagation`]); and a response-body wrapper that reports a gRPC call's
//! final status when its stream ends ([`body`]).
//!
//! Spans leave the process through a bounded queue: a missing or slow
//! collector costs a request nothing, and every span that could not be
//! exported is counted ([`span_drops`]).

mod b3;
pub mod body;
mod drops;
mod export;
pub mod grpc_status;
mod guard;
mod otlp;
pub mod propagation;
mod runtime;
mod setup;

pub use drops::{SpanDrops, span_drops};
pub use guard::Guard;
pub use setup::{init, init_logs, tracer};

/// The tracer type sidecars build spans with directly (no `tracing` layer in
/// between: the proxy's spans are on the hot path).
pub use opentelemetry_sdk::trace::SdkTracer as Tracer;
