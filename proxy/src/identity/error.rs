//! Why the sidecar's identity cannot be loaded or used.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
