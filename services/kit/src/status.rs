//! Turning unexpected failures into a gRPC status: the caller learns which
//! service and what kind of step failed, the operator's log gets the whole cause.

use std::{error::Error, fmt::Write};

use tonic::Status;

/// Logs `err` with its whole chain of causes (each said once: a message
/// never repeats its source) and returns INTERNAL naming `service` and what
/// failed (`err`'s own message, e.g. "database"), so a caller's report
/// points at the right log without the storage details.
pub fn internal(service: &str, err: impl Error) -> Status {
    tracing::error!(service, error = %chain(&err), "internal error");
    Status::internal(format!("{service}: {err} failed (the cause is in the {service} log)"))
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
