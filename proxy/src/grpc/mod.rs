//! The little of gRPC the proxy has to speak itself: reading the service and
//! method from a request path, and answering with a status. What the
//! contracts say about each method is the registry's (`meshwork-contracts`).

pub mod path;
pub mod status;

pub use path::GrpcPath;
pub use status::Code;
