//! Turning unexpected failures into a gRPC status without leaking internals.

use std::{error::Error, fmt::Write};

use tonic::Status;

/// Logs `err` with its whole chain of causes (each said once: a message
/// never repeats its source) and returns INTERNAL with a generic message:
/// storage errors and the like are for the operator's log, not the caller.
pub fn internal(err: impl Error) -> Status {
    tracing::error!(error = %chain(&err), "internal error");
    Status::internal("internal error")
}

/// `err: its source: …`, as anyhow's `{:#}` prints a chain.
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
