//! The mesh.toml that pods read (from the ConfigMap): the user's file with
//! what changes when every replica is a pod. Each service's endpoints become
//! its headless Service's DNS name; the sidecar's inbound and admin bind the
//! pod's address (peers and the kubelet reach them there) while app and
//! outbound stay on 127.0.0.1, as on one machine; certificates and data live
//! where the pod mounts them, contract files are the sets compiled for the
//! ConfigMap. The result is parsed again before it is
//! written, so a pod never gets a file its sidecar would refuse.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context, Result, bail};
use meshwork_config::MeshConfig;
use toml::{Table, Value};

use super::{contracts, layout};

/// `<service>.<namespace>.svc.<cluster-domain>`, the headless Service's name.
fn headless_host(service: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("{service}.{namespace}.svc.{cluster_domain}")
}

/// Rewrites `text` (the file `config` was read from) for pods in `namespace`.
pub fn rewrite(text: &str, config: &MeshConfig, namespace: &str, cluster_domain: &str) -> Result<String> {
    let mut root: Table = text.parse().context("reading mesh.toml again")?;
    root.insert("state_dir".into(), layout::STATE_DIR.into());
    let services = table(&mut root, "services")?;
    for (name, service) in &config.services {
        let entry = table(services, name)?;
        let host = headless_host(name, namespace, cluster_domain);
        entry.insert("endpoints".into(), format!("{host}:{}", service.inbound.port()).into());
        entry.insert("inbound".into(), any_address(service.inbound).into());
        entry.insert("admin".into(), any_address(service.admin).into());
        // A Deployment's replicas are pods, each replica 0 of its own pod;
        // their count is the Deployment's.
        entry.remove("replicas");
        // A folder on the machine that rendered this, not in the image.
        entry.remove("workdir");
        // Contract files, compiled into one set beside this file (see `contracts`).
        if contracts::shipped(service).is_some() {
            let mut sources = Table::new();
            sources.insert("descriptor_sets".into(), vec![contracts::file_name(name)].into());
            entry.insert("contracts".into(), sources.into());
        }
    }
    if let Some(gateway) = &config.gateway {
        let entry = table(&mut root, "gateway")?;
        entry.insert("listen".into(), any_address(gateway.listen).into());
        entry.insert("admin".into(), any_address(gateway.admin).into());
        let sidecar = table(entry, "sidecar")?;
        sidecar.insert("admin".into(), any_address(gateway.sidecar.admin).into());
        // A local Redis on one machine is the Redis Service in a cluster.
        if gateway.rate_limit_store.redis.as_deref() == Some("local") {
            let store = table(entry, "rate_limit_store")?;
            store.remove("local_port");
            let host = headless_host(layout::REDIS, namespace, cluster_domain);
            store.insert("redis".into(), format!("redis://{host}:{}", layout::REDIS_PORT).into());
        }
        if entry.contains_key("tls") {
            let tls = table(entry, "tls")?;
            tls.insert("cert".into(), format!("{}/tls.crt", layout::GATEWAY_TLS_DIR).into());
            tls.insert("key".into(), format!("{}/tls.key", layout::GATEWAY_TLS_DIR).into());
        }
    }
    let body = toml::to_string(&root).context("writing mesh.toml for pods")?;
    let out = format!(
        "# mesh.toml for pods, rendered by `mesh k8s` from {}: endpoints are the\n\
         # headless Services' DNS names, inbound and admin bind the pod's address.\n\n{body}",
        config.source.display()
    );
    // The sidecars will refuse what this refuses: better here than in a crash loop.
    MeshConfig::parse(&out, Path::new(layout::CONFIG_PATH))
        .with_context(|| format!("the mesh.toml rendered for pods is invalid (a bug in mesh k8s):\n{out}"))?;
    Ok(out)
}

/// `0.0.0.0:<port>` (or `[::]:<port>`): every address of the pod.
fn any_address(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(_) => format!("0.0.0.0:{}", addr.port()),
        SocketAddr::V6(_) => format!("[::]:{}", addr.port()),
    }
}

fn table<'a>(parent: &'a mut Table, key: &str) -> Result<&'a mut Table> {
    match parent.get_mut(key) {
        Some(Value::Table(t)) => Ok(t),
        Some(_) => bail!("mesh.toml: {key} is not a table"),
        None => bail!("mesh.toml: {key} is missing"),
    }
}
