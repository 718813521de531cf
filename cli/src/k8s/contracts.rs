//! Contract files for pods. A service whose contracts are files (descriptor
//! sets, or `.proto` files with their imports) has them compiled here, on the
//! machine that renders, into one descriptor set per service. The sets ride
//! in the mesh ConfigMap beside the pods' mesh.toml, which names them in
//! place of the original paths. So every sidecar and the gateway read the
//! same contracts as on one machine, with nothing to build into an image,
//! and an updated ConfigMap reaches them as a changed file, which the
//! registry follows.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use meshwork_config::{ContractSources, MeshConfig, Service};
use meshwork_contracts::ContractSet;

/// What Kubernetes allows in one ConfigMap (its data and binaryData together).
const CONFIG_MAP_LIMIT: usize = 1024 * 1024;

/// The file, in the ConfigMap and beside the pods' mesh.toml, of `service`'s contracts.
pub fn file_name(service: &str) -> String {
    format!("contracts-{service}.pb")
}

/// `service`'s contracts, if they are files that pods need shipped to them
/// (reflection asks the app in the pod instead).
pub fn shipped(service: &Service) -> Option<&ContractSources> {
    service
        .contracts
        .as_ref()
        .filter(|sources| sources.files().next().is_some())
}

/// Each shipped service's contracts as an encoded `FileDescriptorSet`, by
/// file name. prost-reflect's encoding keeps the options' extensions
/// (`google.api.http`), so REST routes survive the trip.
pub fn compile(config: &MeshConfig) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for (name, sources) in config.services.iter().filter_map(|(name, s)| Some((name, shipped(s)?))) {
        let set = ContractSet::load(sources)
            .map_err(|e| anyhow::anyhow!("{}: services.{name}.contracts: {e}", config.source.display()))?;
        files.insert(file_name(name), set.pool().encode_to_vec());
    }
    Ok(files)
}

/// Refuses a ConfigMap the API server would refuse, naming what fills it.
pub fn check_size(pod_config: &str, contracts: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    let total = pod_config.len()
        + contracts
            .iter()
            .map(|(file, bytes)| file.len() + bytes.len())
            .sum::<usize>();
    if total > CONFIG_MAP_LIMIT {
        let sizes: Vec<String> = contracts
            .iter()
            .map(|(file, bytes)| format!("{file} {} KiB", bytes.len() / 1024))
            .collect();
        bail!(
            "the mesh ConfigMap would hold {} KiB (mesh.toml and {}), over Kubernetes' 1 MiB limit; \
             give the largest services `reflection = true` instead of files",
            total / 1024,
            sizes.join(", ")
        );
    }
    Ok(())
}
