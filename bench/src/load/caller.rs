//! What a load loop repeats: one call of some kind, made by a [`Caller`].
//! The echo scenarios' gRPC calls are one kind; the edge benchmark's REST and
//! gRPC calls through a gateway are others (`crate::edge`).

use std::future::Future;

use tonic::Status;

/// Makes one call and reads its whole answer. Clones share the caller's
/// connection (or pool), so many clones multiplex on it.
pub trait Caller: Clone + Send + Sync + 'static {
    fn call(&mut self) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// Why a call failed: a code to count it under (a gRPC status name, or
/// `HTTP 503`) and what the answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        Failure::new(format!("{:?}", status.code()), status.message())
    }
}
