//! A mesh as the sidecars and the edge see it: mesh.toml and the contracts
//! it names, loaded and checked together, so no part ever works from a
//! configuration its contracts refuse.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use meshwork_config::{ConfigError, ContractSources, FileStamp, MeshConfig};

use crate::{check, registry::Registry, set::ContractSet};

/// One consistent snapshot: the configuration, each service's own contract
/// set, and the registry built from them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub config: Arc<MeshConfig>,
    pub registry: Arc<Registry>,
    compiled: Arc<ContractSet>,
    /// By mesh service name: the sets read from its files or its reflection.
    declared: BTreeMap<String, Arc<ContractSet>>,
    files: Vec<(PathBuf, FileStamp)>,
}

impl Mesh {
    /// Reads mesh.toml and the contract files it names. Blocking file I/O.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::new(Arc::new(MeshConfig::load(path)?))
    }

    /// The contracts of an already parsed configuration. Blocking file I/O
    /// when it names contract files.
    pub fn new(config: Arc<MeshConfig>) -> Result<Self, ConfigError> {
        Self::with_sets(config, Arc::new(ContractSet::compiled_in()), &BTreeMap::new())
    }

    /// Re-reads the contracts of `config`, keeping the sets in `reflected`
    /// (by mesh service) for the services that still read reflection.
    fn with_sets(
        config: Arc<MeshConfig>,
        compiled: Arc<ContractSet>,
        reflected: &BTreeMap<String, Arc<ContractSet>>,
    ) -> Result<Self, ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            file: config.source.clone(),
            key,
            reason,
        };
        let mut declared = BTreeMap::new();
        let mut files = vec![(config.source.clone(), config.source_stamp)];
        for (name, service) in &config.services {
            let Some(sources) = &service.contracts else { continue };
            // Stamped before reading, so an edit racing the read is seen.
            files.extend(contract_files(sources).map(|path| {
                let stamp = FileStamp::of(&path);
                (path, stamp)
            }));
            let set = if sources.reflection {
                match reflected.get(name) {
                    Some(set) => set.clone(),
                    None => continue,
                }
            } else {
                let set = ContractSet::load(sources)
                    .map_err(|e| invalid(format!("services.{name}.contracts"), e.to_string()))?;
                Arc::new(set)
            };
            for (i, grpc_service) in service.grpc_services.iter().enumerate() {
                if set.service(grpc_service).is_none() {
                    let defined: Vec<String> = set.pool().services().map(|s| s.full_name().to_string()).collect();
                    return Err(invalid(
                        format!("services.{name}.grpc_services[{i}]"),
                        format!(
                            "'{grpc_service}' is not defined by {} (it defines {})",
                            set.origin(),
                            if defined.is_empty() {
                                "no service".into()
                            } else {
                                defined.join(", ")
                            }
                        ),
                    ));
                }
            }
            declared.insert(name.clone(), set);
        }
        let registry = Registry::build(&config, &compiled, &declared);
        check(&config, &registry)?;
        Ok(Mesh {
            config,
            registry: Arc::new(registry),
            compiled,
            declared,
            files,
        })
    }

    /// This mesh with `service`'s contracts as its reflection served them.
    pub fn with_reflected(&self, service: &str, set: ContractSet) -> Result<Self, ConfigError> {
        let mut reflected = self.reflected_sets();
        reflected.insert(service.to_string(), Arc::new(set));
        Self::with_sets(self.config.clone(), self.compiled.clone(), &reflected)
    }

    /// `config` (an edit of mesh.toml), with the contracts it names read
    /// again and what reflection already served kept.
    pub fn reloaded(&self, config: Arc<MeshConfig>) -> Result<Self, ConfigError> {
        Self::with_sets(config, self.compiled.clone(), &self.reflected_sets())
    }

    fn reflected_sets(&self) -> BTreeMap<String, Arc<ContractSet>> {
        self.declared
            .iter()
            .filter(|(name, _)| self.reads_reflection(name))
            .map(|(name, set)| (name.clone(), set.clone()))
            .collect()
    }

    fn reads_reflection(&self, name: &str) -> bool {
        self.config
            .services
            .get(name)
            .and_then(|s| s.contracts.as_ref())
            .is_some_and(|c| c.reflection)
    }

    /// Services whose contracts come from reflection and have not been read yet.
    pub fn awaiting_reflection(&self) -> impl Iterator<Item = &str> {
        self.config
            .services
            .keys()
            .filter(|name| self.reads_reflection(name) && !self.declared.contains_key(*name))
            .map(String::as_str)
    }

    /// The contract set of mesh service `name`, if it has one of its own.
    pub fn declared(&self, name: &str) -> Option<&ContractSet> {
        self.declared.get(name).map(AsRef::as_ref)
    }

    /// Every file this snapshot was read from, with its version as it was
    /// before it was read: mesh.toml and each contract file. A change to
    /// any of them calls for a reload.
    pub fn files(&self) -> &[(PathBuf, FileStamp)] {
        &self.files
    }
}

/// The files a service's contracts are read from: descriptor sets, and each
/// `.proto` where protox finds it (the first include folder that has it).
fn contract_files(sources: &ContractSources) -> impl Iterator<Item = PathBuf> + '_ {
    let protos = sources
        .protos
        .iter()
        .filter_map(|proto| sources.include.iter().map(|dir| dir.join(proto)).find(|p| p.is_file()));
    sources.descriptor_sets.iter().cloned().chain(protos)
}
