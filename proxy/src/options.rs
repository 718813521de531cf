//! What a sidecar is started with: the mesh, which workload it stands
//! beside, its certificate files, and its limits and timeouts.

use std::{path::PathBuf, sync::Arc, time::Duration};

use meshwork_certs::CertPaths;
use meshwork_config::MeshConfig;

use crate::error::ProxyError;

#[derive(Debug, Clone)]
pub struct SidecarOptions {
    pub config: Arc<MeshConfig>,
    /// The workload (service or client) this sidecar serves.
    pub name: String,
    /// Which replica of the service (0 for a client). Replicas share the
    /// service's certificate and SPIFFE ID; each has its own addresses.
    pub replica: u16,
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub settings: Settings,
}

impl SidecarOptions {
    /// Options for replica 0 of `name` with the certificates the launcher
    /// keeps in `<state_dir>/certs`, and default settings.
    pub fn new(config: Arc<MeshConfig>, name: &str) -> Self {
        Self::replica(config, name, 0)
    }

    /// Like [`SidecarOptions::new`], for replica `replica`.
    pub fn replica(config: Arc<MeshConfig>, name: &str, replica: u16) -> Self {
        let paths = CertPaths::new(&config.state_dir.join("certs"));
        SidecarOptions {
            ca_cert: paths.ca_cert(),
            cert: paths.leaf_cert(name),
            key: paths.leaf_key(name),
            name: name.to_string(),
            replica,
            config,
            settings: Settings::default(),
        }
    }

    /// Like [`SidecarOptions::replica`], refusing a name that is neither a
    /// service nor a client of the mesh, or a replica it does not have.
    pub fn from_config(config: impl Into<Arc<MeshConfig>>, name: &str, replica: u16) -> Result<Self, ProxyError> {
        let config = config.into();
        if config.sidecar(name).is_none() {
            return Err(ProxyError::UnknownWorkload {
                name: name.to_string(),
                config: config.source.clone(),
            });
        }
        if config.sidecar_replica(name, replica).is_none() {
            return Err(ProxyError::UnknownReplica {
                name: name.to_string(),
                replica,
                replicas: config.services.get(name).map_or(1, |s| s.replicas),
                config: config.source.clone(),
            });
        }
        Ok(SidecarOptions::replica(config, name, replica))
    }
}

/// Limits and timeouts. Every wait the proxy does is bounded by one of these.
#[derive(Debug, Clone)]
pub struct Settings {
    /// TCP connect to a peer sidecar or to the app.
    pub connect_timeout: Duration,
    /// A TLS handshake, either side.
    pub handshake_timeout: Duration,
    /// Open connections per listener. At the limit the listener stops
    /// accepting, and new connections wait in the kernel's backlog: pushing
    /// back is better than accepting work we cannot serve.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection we accept.
    pub max_concurrent_streams: u32,
    /// HTTP/2 PING interval, to find dead peers on connections, idle or not.
    pub keepalive_interval: Duration,
    /// On shutdown, how long in-flight streams get to finish.
    pub drain_grace: Duration,
    /// How often the certificate files are checked for changes.
    pub reload_interval: Duration,
    /// How often mesh.toml is checked for changes (replicas, policy).
    pub config_poll_interval: Duration,
    /// How often the app's health is probed for `/ready`.
    pub probe_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            max_connections: 4096,
            max_concurrent_streams: 1024,
            keepalive_interval: Duration::from_secs(20),
            drain_grace: Duration::from_secs(10),
            reload_interval: Duration::from_secs(2),
            config_poll_interval: Duration::from_secs(1),
            probe_interval: Duration::from_secs(1),
        }
    }
}
