//! `mesh certs`: the mesh CA and one certificate per workload, in the state
//! folder that mesh.toml names; with `--secrets`, also each workload's
//! certificate, key and the CA as a Kubernetes Secret manifest, the one
//! `mesh k8s` mounts into that workload's sidecar.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use meshwork_config::MeshConfig;

#[derive(clap::Args)]
pub struct CertsArgs {
    /// The mesh description.
    #[arg(long, default_value = "mesh.toml", env = "MESH_CONFIG")]
    config: PathBuf,
    /// Also write every workload's certificate as a Secret manifest (one
    /// YAML stream, readable by its owner only) to this file.
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// The namespace of those Secrets (as given to `mesh k8s`).
    #[arg(long, short, default_value = "meshwork", requires = "secrets")]
    namespace: String,
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
    if let Some(file) = &args.secrets {
        crate::k8s::check_dns_label(&args.namespace, "--namespace")?;
        let yaml = secrets(&config, &args.namespace)?;
        write_private(file, &yaml).with_context(|| format!("writing {}", file.display()))?;
        println!(
            "wrote {} Secrets for namespace {} to {}",
            config.workload_names().count(),
            args.namespace,
            file.display()
        );
    }
    Ok(())
}

/// One Secret per workload, as `mesh k8s` mounts them: `ca.pem`,
/// `<name>.pem` and `<name>-key.pem` (the files the sidecar reads from
/// `<state_dir>/certs`). PEM is text, so `stringData` keeps them readable.
pub fn secrets(config: &MeshConfig, namespace: &str) -> Result<String> {
    let paths = meshwork_certs::CertPaths::new(&dir(config));
    let read = |path: PathBuf| std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()));
    let ca = read(paths.ca_cert())?;
    let mut out = String::from(
        "# Workload certificates for `mesh k8s`; written by `mesh certs --secrets`. Holds private keys.\n",
    );
    for name in config.workload_names() {
        let secret = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": crate::k8s::layout::cert_secret(name),
                "namespace": namespace,
                "labels": { "app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "meshwork" },
                "annotations": { "meshwork.dev/spiffe-id": config.spiffe_id(name) },
            },
            "stringData": {
                "ca.pem": ca,
                format!("{name}.pem"): read(paths.leaf_cert(name))?,
                format!("{name}-key.pem"): read(paths.leaf_key(name))?,
            },
        });
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&secret).context("writing YAML")?);
    }
    Ok(out)
}

/// Writes `text` to `file`, readable by its owner only, from the start.
fn write_private(file: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)?;
    // An older file keeps its mode on open: tighten it before writing keys.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_gets_a_secret_with_the_files_its_sidecar_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../mesh.toml")).expect("mesh.toml");
        let config = MeshConfig::parse(&text, &dir.path().join("mesh.toml")).expect("valid");
        ensure(&config).expect("issue");
        let file = dir.path().join("secrets.yaml");
        write_private(&file, &secrets(&config, "shop").expect("secrets")).expect("write");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).expect("stat").permissions());
        assert_eq!(mode & 0o777, 0o600);
        let objects = crate::k8s::parse_stream(&std::fs::read_to_string(&file).expect("read"));
        let names: Vec<_> = config.workload_names().collect();
        assert_eq!(objects.len(), names.len());
        for (secret, name) in objects.iter().zip(names) {
            assert_eq!(secret["metadata"]["name"], crate::k8s::layout::cert_secret(name));
            assert_eq!(secret["metadata"]["namespace"], "shop");
            let data = &secret["stringData"];
            assert!(
                data["ca.pem"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("-----BEGIN CERTIFICATE"))
            );
            assert!(
                data[format!("{name}.pem")]
                    .as_str()
                    .is_some_and(|p| p.contains("BEGIN CERTIFICATE"))
            );
            assert!(
                data[format!("{name}-key.pem")]
                    .as_str()
                    .is_some_and(|p| p.contains("PRIVATE KEY"))
            );
        }
    }
}
