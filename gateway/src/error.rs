//! Why the gateway cannot start: each says which file, address or method,
//! and why, once.

use std::{net::SocketAddr, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] meshwork_config::ConfigError),
    #[error("{}: the mesh has no [gateway] section", file.display())]
    NoGateway { file: PathBuf },
    #[error("{}: gateway: {source}", file.display())]
    Catalog {
        file: PathBuf,
        #[source]
        source: crate::catalog::CatalogError,
    },
    /// A rate limit or its store that cannot be used.
    #[error("{}: {reason}", file.display())]
    Policy { file: PathBuf, reason: String },
    #[error("{}: {reason}", file.display())]
    Tls { file: PathBuf, reason: String },
    #[error("{}: {reason}", file.display())]
    Mcp { file: PathBuf, reason: String },
    #[error("mesh mcp --stdio: {0}")]
    Stdio(String),
    #[error("cannot listen on {addr} ({what}): {cause}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        cause: std::io::Error,
    },
}
