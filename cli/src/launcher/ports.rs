//! Before starting anything: every address the mesh will listen on must be
//! free, and one that is not is reported with the key that names it. An
//! app that `mesh up` does not start (no `command`, not one of the shop's)
//! may already be listening: it is waited for, not refused.

use std::net::{SocketAddr, TcpListener};

use anyhow::{Result, bail};
use meshwork_config::MeshConfig;

pub fn check_free(config: &MeshConfig) -> Result<()> {
    let mut addresses: Vec<(String, SocketAddr)> = Vec::new();
    for (name, s) in &config.services {
        if super::starts_app(name, s) {
            addresses.push((format!("services.{name}.app"), s.app));
        }
        for (key, addr) in [("inbound", s.inbound), ("outbound", s.outbound), ("admin", s.admin)] {
            addresses.push((format!("services.{name}.{key}"), addr));
        }
    }
    for (name, c) in &config.clients {
        addresses.push((format!("clients.{name}.outbound"), c.outbound));
        addresses.push((format!("clients.{name}.admin"), c.admin));
    }
    for (key, addr) in addresses {
        if let Err(e) = TcpListener::bind(addr) {
            bail!("{}: {key}: port {addr} is not free: {e}", config.source.display());
        }
    }
    Ok(())
}
