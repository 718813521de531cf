//! What can go wrong issuing or loading certificates, with the file involved.

use std::path::PathBuf;

/// Each message says its cause itself, and no variant returns it again as
/// `source()`: a binary printing the whole chain would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{}: not a usable {what}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("cannot generate {what}: {cause}")]
    Generate { what: String, cause: rcgen::Error },
    #[error("'{0}' is not a valid SPIFFE ID for a certificate")]
    BadSpiffeId(String),
}

impl CertError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
        move |cause| CertError::Io {
            path: path.to_path_buf(),
            cause,
        }
    }
}
