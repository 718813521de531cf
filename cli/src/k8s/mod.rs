//! `mesh k8s`: the whole mesh from mesh.toml as Kubernetes manifests for a
//! namespace: one multi-document YAML file on stdout, or one file per
//! object in `--out <dir>`. What goes into the objects is in `render.rs`;
//! the mesh.toml the pods read is in `pod_config.rs`, the contract files it
//! names in `contracts.rs`; where things are inside a pod is in [`layout`].
//! Certificates are not rendered here:
//! `mesh certs --secrets` writes them as Secrets (or cert-manager's CSI
//! driver or SPIRE issues them, see the README).

mod contracts;
mod database;
mod pod_config;
mod render;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, Result, bail};
use meshwork_config::MeshConfig;

/// Where things are inside a pod, and the names of shared objects.
pub mod layout {
    /// The name of the sidecar container in every pod.
    pub const PROXY_CONTAINER: &str = "mesh-proxy";
    pub const CONFIG_MAP: &str = "mesh";
    pub const CONFIG_FILE: &str = "mesh.toml";
    pub const CONFIG_DIR: &str = "/etc/mesh";
    pub const CONFIG_PATH: &str = "/etc/mesh/mesh.toml";
    /// mesh.toml's `state_dir` in pods; the sidecar reads
    /// `<state_dir>/certs/{ca.pem,<name>.pem,<name>-key.pem}`.
    pub const STATE_DIR: &str = "/var/lib/mesh";
    pub const CERTS_DIR: &str = "/var/lib/mesh/certs";
    pub const DATA_DIR: &str = "/var/lib/mesh/data";
    pub const GATEWAY_TLS_DIR: &str = "/etc/mesh/gateway-tls";
    /// The Redis rendered for the gateway's shared rate limits.
    pub const REDIS: &str = "redis";
    pub const REDIS_PORT: u16 = 6379;
    /// The user every container runs as (and the pods' fsGroup).
    pub const UID: u32 = 65532;
    /// Secret files: readable by their owner only (0400).
    pub const SECRET_MODE: u32 = 0o400;

    /// CPU and memory: request, then limit.
    pub type Resources = (&'static str, &'static str, &'static str, &'static str);
    /// A sidecar is small (see BENCHMARKS.md): a few MB, little CPU at rest.
    pub const PROXY_RESOURCES: Resources = ("50m", "32Mi", "1", "128Mi");
    pub const APP_RESOURCES: Resources = ("100m", "64Mi", "1", "256Mi");

    /// The Secret holding a workload's certificate, key and the mesh CA.
    pub fn cert_secret(workload: &str) -> String {
        format!("mesh-cert-{workload}")
    }

    /// The Secret (type kubernetes.io/tls) of the gateway's public certificate.
    pub fn gateway_tls_secret() -> String {
        "gateway-tls".into()
    }
}

#[derive(clap::Args)]
pub struct K8sArgs {
    /// The mesh description.
    #[arg(long, default_value = "mesh.toml", env = "MESH_CONFIG")]
    config: PathBuf,
    /// The namespace every object goes in.
    #[arg(long, short, default_value = "meshwork")]
    namespace: String,
    /// The image with the `mesh` binary (deploy/Dockerfile builds it).
    #[arg(long, default_value = concat!("meshwork/mesh:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// The image of a service whose app is its own `command`: SERVICE=IMAGE.
    #[arg(long = "app-image", value_parser = parse_app_image)]
    app_images: Vec<(String, String)>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Write one file per object here instead of one stream on stdout.
    #[arg(long, conflicts_with = "pod_config")]
    out: Option<PathBuf>,
    /// Print only the mesh.toml the pods read (the ConfigMap's).
    #[arg(long)]
    pod_config: bool,
    /// Where the services keep their data: `postgres` (a PostgreSQL
    /// StatefulSet rendered with the mesh; its password in the Secret
    /// `postgres`, key `password`), `secret:<name>` (an existing database,
    /// its URL in that Secret's key `url`) or `sqlite` (in each pod; one
    /// replica per service only).
    #[arg(long, default_value = "postgres")]
    database: database::Database,
}

fn parse_app_image(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((service, image)) if !service.is_empty() && !image.is_empty() => {
            Ok((service.to_string(), image.to_string()))
        }
        _ => Err(format!("'{s}' is not SERVICE=IMAGE")),
    }
}

/// The manifests of `config` (read from `text`) as `(file name, YAML)` pairs.
pub fn render(
    config: &MeshConfig,
    text: &str,
    namespace: &str,
    image: &str,
    app_images: &BTreeMap<String, String>,
    cluster_domain: &str,
    database: &database::Database,
) -> Result<Vec<(String, String)>> {
    database.check(config)?;
    check_dns_label(namespace, "--namespace")?;
    if let Some(unknown) = app_images.keys().find(|s| !config.services.contains_key(*s)) {
        bail!("--app-image {unknown}=...: mesh.toml has no service '{unknown}'");
    }
    let pod_config = pod_config::rewrite(text, config, namespace, cluster_domain)?;
    let contracts = contracts::compile(config)?;
    contracts::check_size(&pod_config, &contracts)?;
    let opts = render::Options {
        namespace,
        image,
        app_images,
        pod_config: &pod_config,
        contracts: &contracts,
        database,
        cluster_domain,
    };
    render::objects(config, &opts)?
        .iter()
        .enumerate()
        .map(|(i, object)| {
            let kind = object["kind"].as_str().unwrap_or("object").to_lowercase();
            let name = object["metadata"]["name"].as_str().unwrap_or("unnamed");
            let yaml = serde_norway::to_string(object).context("writing YAML")?;
            Ok((format!("{i:02}-{kind}-{name}.yaml"), yaml))
        })
        .collect()
}

/// All documents in one YAML stream.
pub fn stream(documents: &[(String, String)]) -> String {
    let mut out = String::from("# Rendered by `mesh k8s`; apply with `kubectl apply -f`.\n");
    for (_, yaml) in documents {
        out.push_str("---\n");
        out.push_str(yaml);
    }
    out
}

pub fn run(args: K8sArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let config = MeshConfig::parse(&text, &args.config)?;
    if args.pod_config {
        check_dns_label(&args.namespace, "--namespace")?;
        print!(
            "{}",
            pod_config::rewrite(&text, &config, &args.namespace, &args.cluster_domain)?
        );
        return Ok(());
    }
    let app_images: BTreeMap<_, _> = args.app_images.into_iter().collect();
    let documents = render(
        &config,
        &text,
        &args.namespace,
        &args.image,
        &app_images,
        &args.cluster_domain,
        &args.database,
    )?;
    match args.out {
        None => print!("{}", stream(&documents)),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (file, yaml) in &documents {
                let path = dir.join(file);
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            }
            eprintln!("mesh: wrote {} manifests to {}", documents.len(), dir.display());
        }
    }
    Ok(())
}

/// An RFC 1123 label, as namespaces are.
pub fn check_dns_label(s: &str, what: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!("{what} '{s}' is not a DNS label: lowercase letters, digits and '-', starting with a letter");
    }
    Ok(())
}

/// Every object of a stream, for tests and tools that read manifests back.
#[cfg(test)]
pub fn parse_stream(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    use serde_json::Value;
    serde_norway::Deserializer::from_str(text)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}
