//! What can go wrong in payments, and the gRPC status each maps to.

use std::borrow::Cow;

use meshwork_service_kit::db::sqlx;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed; the message names the field.
    #[error("{field} {reason}")]
    Invalid { field: Cow<'static, str>, reason: String },
    /// The key was used before for a charge with other contents: returning that
    /// order would tell the caller a different charge happened than it asked for.
    #[error("idempotency key '{0}' was already used for a different charge")]
    KeyReused(String),
    #[error("order '{0}' not found")]
    OrderNotFound(String),
    #[error("database")]
    Db(#[from] sqlx::Error),
}

impl Error {
    pub(crate) fn invalid(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Invalid { .. } => Code::InvalidArgument,
            Error::KeyReused(_) => Code::FailedPrecondition,
            Error::OrderNotFound(_) => Code::NotFound,
            Error::Db(_) => return meshwork_service_kit::internal(crate::NAME, e),
        };
        Status::new(code, e.to_string())
    }
}
