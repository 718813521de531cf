//! Why a sidecar cannot start, naming the sidecar and what it was doing.

use std::{net::SocketAddr, path::PathBuf};

use crate::identity::IdentityError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{}: no service or client named '{name}'", config.display())]
    UnknownWorkload { name: String, config: PathBuf },
    #[error("{}: service '{name}' has no replica {replica} (it has {replicas})", config.display())]
    UnknownReplica {
        name: String,
        replica: u16,
        replicas: u16,
        config: PathBuf,
    },
    #[error("{sidecar} sidecar: cannot bind {listener} {addr}: {reason}")]
    Bind {
        sidecar: String,
        listener: &'static str,
        addr: SocketAddr,
        reason: String,
    },
    #[error("{sidecar} sidecar: no listener was given for {listener}")]
    MissingListener { sidecar: String, listener: &'static str },
    /// mesh.toml and its contracts do not agree (the error names file and key).
    #[error(transparent)]
    Contracts(meshwork_config::ConfigError),
    /// Its message includes the identity error's, which is therefore not
    /// also its `source()` (a chain printed whole would say it twice).
    #[error("{sidecar} sidecar: {cause}")]
    Identity { sidecar: String, cause: IdentityError },
}

/// A short, stable wording for the usual bind failures ("address in use"),
/// the OS text otherwise.
pub(crate) fn io_reason(error: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match error.kind() {
        AddrInUse => "address in use".into(),
        AddrNotAvailable => "address not available on this machine".into(),
        PermissionDenied => "permission denied".into(),
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "timed out".into(),
        _ => error.to_string(),
    }
}
