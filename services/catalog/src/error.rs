//! What can go wrong in the catalog, and the gRPC status each maps to.

use meshwork_service_kit::db::sqlx;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed; the message names the field.
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("unknown product '{0}'")]
    UnknownProduct(String),
    /// Not enough units for a reservation; the message names the product.
    #[error("{0}")]
    Short(String),
    #[error("unknown reservation '{0}'")]
    UnknownReservation(String),
    /// A reservation id used again with other items, or a step its state forbids.
    #[error("{0}")]
    Conflict(String),
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
            Error::UnknownProduct(_) | Error::UnknownReservation(_) => Code::NotFound,
            Error::Short(_) | Error::Conflict(_) => Code::FailedPrecondition,
            Error::Db(_) => return meshwork_service_kit::internal(crate::NAME, e),
        };
        Status::new(code, e.to_string())
    }
}
