//! What can go wrong in the cart, and the gRPC status each maps to. Errors from peer
//! services keep their code and say which step failed.

use meshwork_service_kit::db::sqlx;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed; the message names the field.
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("unknown product '{0}'")]
    UnknownProduct(String),
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    #[error("cart is empty")]
    EmptyCart,
    /// The cart cannot be checked out as it is (stock, currencies).
    #[error("{0}")]
    Precondition(String),
    /// A peer answered with an error at `step`.
    #[error("{step}: {}", status.message())]
    Peer { step: String, status: Status },
    /// The checkout ran past its limit; the recovery finishes or undoes it.
    #[error(
        "checkout took longer than {0:?} and was stopped where it was; it will be finished or undone \
         within a minute, and retrying it is safe"
    )]
    OutOfTime(std::time::Duration),
    #[error("database")]
    Db(#[from] sqlx::Error),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Invalid { .. } => Code::InvalidArgument,
            Error::UnknownProduct(_) | Error::UnknownUser(_) => Code::NotFound,
            Error::EmptyCart | Error::Precondition(_) => Code::FailedPrecondition,
            Error::Peer { status, .. } => status.code(),
            Error::OutOfTime(_) => Code::DeadlineExceeded,
            Error::Db(_) => return meshwork_service_kit::internal(crate::NAME, e),
        };
        Status::new(code, e.to_string())
    }
}
