//! Turning unexpected failures into a gRPC status without leaking internals.

use std::fmt::Display;

use tonic::Status;

/// Logs `err` and returns INTERNAL with a generic message: storage errors and the
/// like are for the operator's log, not for the caller.
pub fn internal(err: impl Display) -> Status {
    tracing::error!(error = %err, "internal error");
    Status::internal("internal error")
}
