//! `mesh certs`: the mesh CA and one certificate per workload, in the state
//! folder that mesh.toml names.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use meshwork_config::MeshConfig;

#[derive(clap::Args)]
pub struct CertsArgs {
    /// The mesh description.
    #[arg(long, default_value = "mesh.toml", env = "MESH_CONFIG")]
    config: PathBuf,
}

/// Where a mesh keeps its certificates.
pub fn dir(config: &MeshConfig) -> PathBuf {
    config.state_dir.join("certs")
}

/// Renew a leaf once less than this share of its lifetime is left, so that a
/// sidecar always holds a certificate with time to spare.
pub fn renew_before(config: &MeshConfig) -> Duration {
    config.leaf_lifetime / 3
}

/// Issues whatever is missing or close to expiry; returns the workloads issued.
pub fn ensure(config: &MeshConfig) -> Result<Vec<String>> {
    let names: Vec<&str> = config.workload_names().collect();
    let dir = dir(config);
    meshwork_certs::ensure(
        &dir,
        &config.trust_domain,
        &names,
        config.leaf_lifetime,
        renew_before(config),
    )
    .with_context(|| format!("issuing certificates in {}", dir.display()))
}

pub fn run(args: CertsArgs) -> Result<()> {
    let config = MeshConfig::load(&args.config)?;
    let issued = ensure(&config)?;
    if issued.is_empty() {
        println!("certificates in {} are current", dir(&config).display());
    } else {
        for name in &issued {
            println!("issued {} for {name}", config.spiffe_id(name));
        }
    }
    Ok(())
}
