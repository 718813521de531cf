//! What can go wrong in the users service, and the gRPC status each maps to.

use meshwork_service_kit::db::sqlx;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed; the message names the field.
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("a user with email '{0}' already exists")]
    EmailTaken(String),
    /// Deliberately says neither which of the two was wrong.
    #[error("wrong email or password")]
    BadCredentials,
    #[error("user '{0}' not found")]
    NotFound(String),
    #[error("OAuth client '{0}' is not registered")]
    UnknownClient(String),
    /// OAuth's invalid_grant: the code or what it is exchanged with is wrong.
    #[error("{0}")]
    InvalidGrant(String),
    #[error("database")]
    Db(#[from] sqlx::Error),
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("signing key: {0}")]
    Key(String),
    #[error("token signing")]
    Token(#[from] jsonwebtoken::errors::Error),
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
            Error::EmailTaken(_) => Code::AlreadyExists,
            Error::BadCredentials => Code::Unauthenticated,
            Error::NotFound(_) | Error::UnknownClient(_) => Code::NotFound,
            Error::InvalidGrant(_) => Code::FailedPrecondition,
            Error::Db(_) | Error::Hash(_) | Error::Key(_) | Error::Token(_) => {
                return meshwork_service_kit::internal(crate::NAME, e);
            }
        };
        Status::new(code, e.to_string())
    }
}
