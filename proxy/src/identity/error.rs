//! Why the sidecar's identity cannot be loaded or used.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The OS error is in the message, so it is not also `source()`.
    #[error("{}: cannot read: {cause}", path.display())]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{}: the certificate is {found}, expected {expected}", path.display())]
    WrongIdentity {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}
