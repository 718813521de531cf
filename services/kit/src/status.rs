//! Turning unexpected failures into a gRPC status: the caller learns which
//! service and what kind of step failed, the operator's log gets the whole cause.

use std::fmt::Display;

use tonic::Status;

/// Logs `err` with its cause and returns INTERNAL naming `service` and what failed
/// (`err`'s own message, e.g. "database: database is locked"), so a caller's
/// report points at the right log.
pub fn internal(service: &str, err: impl Display) -> Status {
    tracing::error!(service, error = %err, "internal error");
    Status::internal(format!("{service}: {err} (the cause is in the {service} log)"))
}
