//! The little of gRPC the proxy has to speak itself: reading the service and
//! method from a request path, what the contracts say about each method,
//! and answering with a status.

pub mod contracts;
pub mod path;
pub mod status;

pub use contracts::Contracts;
pub use path::GrpcPath;
pub use status::Code;
