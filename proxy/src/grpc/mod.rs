//! The little of gRPC the proxy has to speak itself: reading the service and
//! method from a request path, and answering with a status.

pub mod path;
pub mod status;

pub use path::GrpcPath;
pub use status::Code;
