//! The one error a bad `mesh.toml` produces: which file, which key, and why.

use std::path::PathBuf;

/// A `mesh.toml` that cannot be used, with the file, the key and the reason,
/// so a user can fix it without reading our code.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The OS error is part of the message, not a `source()`: a binary
    /// printing the whole chain would otherwise say it twice.
    #[error("{}: cannot read: {cause}", file.display())]
    Read { file: PathBuf, cause: std::io::Error },
    #[error("{}: {key}: {reason}", file.display())]
    Invalid {
        file: PathBuf,
        /// Dotted path of the offending key, for example `services.cart.inbound`;
        /// empty where the problem is the file's syntax as a whole.
        key: String,
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about (empty for read errors).
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "",
            ConfigError::Invalid { key, .. } => key,
        }
    }
}
