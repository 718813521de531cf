//! One source's descriptors, as a prost-reflect pool: the set compiled into
//! Meshwork, an encoded `FileDescriptorSet` file, `.proto` files compiled
//! with protox, or what an app's reflection served. Each service's set is
//! a pool of its own, so two services that ship different versions of a
//! same-named file never clash.

use std::{path::Path, sync::Arc};

use meshwork_config::ContractSources;
use prost::Message;
use prost_reflect::{DescriptorPool, ServiceDescriptor};
use prost_types::FileDescriptorSet;

/// Why a source's descriptors could not be read. The messages name the
/// file, so a config error built from them says where to look.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// Its message says the I/O error, which is therefore not also its
    /// `source()` (a chain printed whole would say it twice).
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("{origin} is not an encoded FileDescriptorSet: {reason}")]
    Decode { origin: String, reason: String },
    #[error("{origin}: {reason}")]
    Descriptors { origin: String, reason: String },
    #[error("cannot compile {reason}")]
    Compile { reason: String },
}

/// The descriptors of one source, and where they came from (for messages).
#[derive(Debug, Clone)]
pub struct ContractSet {
    pool: DescriptorPool,
    origin: Arc<str>,
}

impl ContractSet {
    /// The shop's and the test echo's contracts, built into every binary.
    pub fn compiled_in() -> Self {
        Self::decode(
            meshwork_proto::FILE_DESCRIPTOR_SET,
            "the contracts compiled into Meshwork",
        )
        // Built by our own build script from our own protos: it decodes,
        // and an empty set only costs the retries of idempotent methods.
        .unwrap_or_else(|error| {
            tracing::error!(%error, "compiled-in contracts unusable");
            ContractSet::empty("no contracts")
        })
    }

    pub fn empty(origin: &str) -> Self {
        ContractSet {
            pool: DescriptorPool::new(),
            origin: origin.into(),
        }
    }

    /// An encoded `FileDescriptorSet`. Decoded by prost-reflect, which
    /// keeps the options' extensions (`google.api.http`) that decoding into
    /// prost-types would drop.
    pub fn decode(bytes: &[u8], origin: &str) -> Result<Self, SetError> {
        let mut pool = DescriptorPool::new();
        add_encoded(&mut pool, bytes, origin)?;
        Ok(ContractSet {
            pool,
            origin: origin.into(),
        })
    }

    /// Encoded `FileDescriptorProto`s, as reflection serves them.
    pub fn from_encoded_files(files: &[Vec<u8>], origin: &str) -> Result<Self, SetError> {
        // A FileDescriptorSet is its files as field 1, one after another.
        let mut set = Vec::with_capacity(files.iter().map(|f| f.len() + 6).sum());
        for file in files {
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut set);
            prost::encoding::encode_varint(file.len() as u64, &mut set);
            set.extend_from_slice(file);
        }
        Self::decode(&set, origin)
    }

    /// Files in any order, each file's imports among them.
    pub fn from_set(set: FileDescriptorSet, origin: &str) -> Result<Self, SetError> {
        let mut pool = DescriptorPool::new();
        pool.add_file_descriptor_set(set).map_err(|e| SetError::Descriptors {
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
        Ok(ContractSet {
            pool,
            origin: origin.into(),
        })
    }

    /// Reads a service's declared files: descriptor sets, then `.proto`
    /// files compiled with protox (with their comments, which the edge
    /// shows as descriptions). Blocking file I/O: call at start or from a
    /// blocking task.
    pub fn load(sources: &ContractSources) -> Result<Self, SetError> {
        let mut pool = DescriptorPool::new();
        let mut origins = Vec::new();
        for path in &sources.descriptor_sets {
            let bytes = std::fs::read(path).map_err(|cause| SetError::Read {
                path: path.clone(),
                cause,
            })?;
            add_encoded(&mut pool, &bytes, &path.display().to_string())?;
            origins.push(path.display().to_string());
        }
        if !sources.protos.is_empty() {
            let origin = joined(&sources.protos);
            add_encoded(&mut pool, &compile(&sources.protos, &sources.include)?, &origin)?;
            origins.push(origin);
        }
        Ok(ContractSet {
            pool,
            origin: origins.join(", ").into(),
        })
    }

    /// The pool, for message descriptors (JSON mapping, schemas).
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The gRPC service `full_name` (`pkg.Service`), if this set defines it.
    pub fn service(&self, full_name: &str) -> Option<ServiceDescriptor> {
        self.pool.get_service_by_name(full_name)
    }
}

/// Adds an encoded set's files to `pool`; a file the pool has already (a
/// well-known type from two sources, say) is kept once.
fn add_encoded(pool: &mut DescriptorPool, bytes: &[u8], origin: &str) -> Result<(), SetError> {
    let set = FileDescriptorSet::decode(bytes).map_err(|e| SetError::Decode {
        origin: origin.to_string(),
        reason: e.to_string(),
    })?;
    let mut fresh = Vec::new();
    let mut offset = 0;
    // Walk the raw set so each new file goes in as encoded (with its options).
    while offset < bytes.len() {
        let mut rest = &bytes[offset..];
        let before = rest.len();
        let (tag, _) = prost::encoding::decode_key(&mut rest).map_err(|e| decode_error(origin, e))?;
        let len = prost::encoding::decode_varint(&mut rest).map_err(|e| decode_error(origin, e))? as usize;
        let head = before - rest.len();
        let file = bytes
            .get(offset + head..offset + head + len)
            .ok_or_else(|| decode_error(origin, "a file is cut short"))?;
        if tag == 1 {
            fresh.push(file);
        }
        offset += head + len;
    }
    let mut encoded = Vec::with_capacity(bytes.len());
    for (file, proto) in fresh.iter().zip(&set.file) {
        if pool.get_file_by_name(proto.name()).is_some() {
            continue;
        }
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut encoded);
        prost::encoding::encode_varint(file.len() as u64, &mut encoded);
        encoded.extend_from_slice(file);
    }
    pool.decode_file_descriptor_set(encoded.as_slice())
        .map_err(|e| SetError::Descriptors {
            origin: origin.to_string(),
            reason: e.to_string(),
        })
}

fn decode_error(origin: &str, reason: impl std::fmt::Display) -> SetError {
    SetError::Decode {
        origin: origin.to_string(),
        reason: reason.to_string(),
    }
}

fn compile(protos: &[std::path::PathBuf], include: &[std::path::PathBuf]) -> Result<Vec<u8>, SetError> {
    let mut compiler = protox::Compiler::new(include).map_err(|e| SetError::Compile {
        reason: format!("{}: {e}", joined(protos)),
    })?;
    compiler.include_imports(true).include_source_info(true);
    for proto in protos {
        compiler.open_file(Path::new(proto)).map_err(|e| SetError::Compile {
            reason: format!("{}: {e}", proto.display()),
        })?;
    }
    Ok(compiler.encode_file_descriptor_set())
}

fn joined(paths: &[std::path::PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_in_has_the_shop() {
        let set = ContractSet::compiled_in();
        assert!(set.service("shop.catalog.v1.CatalogService").is_some());
        assert!(set.service("nope.v1.Nope").is_none());
    }

    #[test]
    fn garbage_is_refused_naming_its_origin() {
        let error = ContractSet::decode(b"\xff\xff\xff", "reviews.pb").expect_err("garbage");
        assert!(
            error
                .to_string()
                .starts_with("reviews.pb is not an encoded FileDescriptorSet: "),
            "{error}"
        );
    }

    #[test]
    fn protos_compile_from_include_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("r/v1")).expect("mkdir");
        std::fs::write(
            dir.path().join("r/v1/r.proto"),
            "syntax = \"proto3\"; package r.v1;\n// Reviews.\nservice R { rpc Get(M) returns (M) { option idempotency_level = NO_SIDE_EFFECTS; } }\nmessage M {}\n",
        )
        .expect("write");
        let sources = ContractSources {
            protos: vec!["r/v1/r.proto".into()],
            include: vec![dir.path().to_path_buf()],
            ..ContractSources::default()
        };
        let set = ContractSet::load(&sources).expect("compiles");
        let service = set.service("r.v1.R").expect("service");
        assert_eq!(
            service.methods().map(|m| m.name().to_string()).collect::<Vec<_>>(),
            ["Get"]
        );

        let missing = ContractSources {
            protos: vec!["r/v1/missing.proto".into()],
            include: vec![dir.path().to_path_buf()],
            ..ContractSources::default()
        };
        let error = ContractSet::load(&missing).expect_err("missing file");
        assert!(error.to_string().contains("r/v1/missing.proto"), "{error}");
    }
}
