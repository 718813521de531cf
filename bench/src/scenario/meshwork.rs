//! `meshwork`: load generator → the `bench` client's outbound sidecar →
//! mTLS → the `echo` service's inbound sidecar → echo server. The sidecars
//! are normally two `mesh proxy` processes (the real binary, measured from
//! /proc); in-process mode runs them on a runtime of their own inside this
//! process instead (no `mesh` binary needed; CPU and memory not measured).

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::{Context, Result};
use meshwork_config::MeshConfig;
use meshwork_proxy::{Listeners, SidecarOptions};
use tempfile::TempDir;
use tokio::{net::TcpListener, process::Command, sync::watch};

use super::{
    ProxyChild, Target, free_ports,
    pki::{self, CLIENT, SERVICE, TRUST_DOMAIN},
};
use crate::{args::ScenarioKind, background::Background, plan::MeshMode};

/// The addresses of the two sidecars.
pub(super) struct Ports {
    pub echo_inbound: SocketAddr,
    pub echo_outbound: SocketAddr,
    pub echo_admin: SocketAddr,
    pub client_outbound: SocketAddr,
    pub client_admin: SocketAddr,
}

pub async fn start(mode: &MeshMode, echo: SocketAddr, spans_to: Option<&str>) -> Result<Target> {
    let dir = pki::mesh_dir("mesh")?;
    match mode {
        MeshMode::Process(bin) => processes(bin, echo, dir, spans_to).await,
        MeshMode::InProcess => in_process(echo, dir).await,
    }
}

/// mesh.toml: the echo service (callable by `bench` only) and the `bench` client.
pub(super) fn config_text(state_dir: &Path, app: SocketAddr, ports: &Ports) -> String {
    format!(
        r#"# Written by meshwork-bench for one run.
trust_domain = "{TRUST_DOMAIN}"
state_dir = '{state}'
leaf_lifetime = "24h"

[services.{SERVICE}]
app = "{app}"
inbound = "{echo_inbound}"
outbound = "{echo_outbound}"
admin = "{echo_admin}"
grpc_services = ["meshwork.echo.v1.EchoService"]
allow = [{{ from = "{CLIENT}" }}]

[clients.{CLIENT}]
outbound = "{client_outbound}"
admin = "{client_admin}"
"#,
        state = state_dir.display(),
        echo_inbound = ports.echo_inbound,
        echo_outbound = ports.echo_outbound,
        echo_admin = ports.echo_admin,
        client_outbound = ports.client_outbound,
        client_admin = ports.client_admin,
    )
}

impl Ports {
    pub(super) fn free() -> Result<Ports> {
        let [echo_inbound, echo_outbound, echo_admin, client_outbound, client_admin] = free_ports()?;
        Ok(Ports {
            echo_inbound,
            echo_outbound,
            echo_admin,
            client_outbound,
            client_admin,
        })
    }
}

async fn processes(bin: &Path, echo: SocketAddr, dir: TempDir, spans_to: Option<&str>) -> Result<Target> {
    let ports = Ports::free()?;
    let config = dir.path().join("mesh.toml");
    std::fs::write(&config, config_text(dir.path(), echo, &ports)).context("writing mesh.toml")?;
    let mut children = Vec::new();
    for name in [CLIENT, SERVICE] {
        let mut command = Command::new(bin);
        // `mesh-proxy` is the sidecar itself; `mesh` (given with --mesh-bin) runs it as `mesh proxy`.
        if bin.file_name().is_some_and(|n| n == "mesh") {
            command.arg("proxy");
        }
        command.arg("--config").arg(&config).args(["--name", name]);
        if let Some(endpoint) = spans_to {
            command.env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint);
        }
        let log = dir.path().join(format!("{name}-proxy.log"));
        children.push(ProxyChild::spawn(&format!("sidecar {name}"), command, &log)?);
    }
    let mode = format!("2 sidecar processes ({})", bin.display());
    let mut target = Target::proxy_pair(
        ScenarioKind::Meshwork,
        ports.client_outbound,
        mode,
        children,
        vec![Box::new(dir)],
    );
    target.wait_ready(&[ports.client_admin, ports.echo_admin]).await?;
    Ok(target)
}

/// Sidecars running on this process's `bench-sidecars` runtime; dropping it
/// signals them to stop, then stops the runtime.
struct InProcess {
    _stop: watch::Sender<()>,
    _runtime: Background,
}

async fn in_process(echo: SocketAddr, dir: TempDir) -> Result<Target> {
    let bind = || -> Result<std::net::TcpListener> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a sidecar listener")?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    let (echo_in, echo_out, echo_adm, client_out, client_adm) = (bind()?, bind()?, bind()?, bind()?, bind()?);
    let ports = Ports {
        echo_inbound: echo_in.local_addr()?,
        echo_outbound: echo_out.local_addr()?,
        echo_admin: echo_adm.local_addr()?,
        client_outbound: client_out.local_addr()?,
        client_admin: client_adm.local_addr()?,
    };
    let source = dir.path().join("mesh.toml");
    let config = Arc::new(
        MeshConfig::parse(&config_text(dir.path(), echo, &ports), &source).context("the benchmark's mesh.toml")?,
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = Background::new("bench-sidecars", threads)?;
    let handle = runtime.handle().context("sidecar runtime")?;
    let (stop, stopped) = watch::channel(());
    for (name, inbound, outbound, admin) in [
        (CLIENT, None, client_out, client_adm),
        (SERVICE, Some(echo_in), echo_out, echo_adm),
    ] {
        let opts = SidecarOptions::from_config(config.clone(), name, 0)?;
        let mut stopped = stopped.clone();
        handle.spawn(async move {
            let listeners = (|| {
                anyhow::Ok(Listeners {
                    inbound: inbound.map(TcpListener::from_std).transpose()?,
                    outbound: TcpListener::from_std(outbound)?,
                    admin: TcpListener::from_std(admin)?,
                })
            })();
            let ran = match listeners {
                Ok(listeners) => meshwork_proxy::run_with_listeners(opts, listeners, async move {
                    // Resolves when the sender is dropped with the scenario.
                    let _ = stopped.changed().await;
                })
                .await
                .map_err(anyhow::Error::from),
                Err(error) => Err(error),
            };
            if let Err(error) = ran {
                eprintln!("in-process {name} sidecar failed: {error:#}");
            }
        });
    }
    let mode = "2 sidecars in-process (CPU and memory not measured)".into();
    let keep: Vec<Box<dyn Send + Sync>> = vec![
        Box::new(InProcess {
            _stop: stop,
            _runtime: runtime,
        }),
        Box::new(dir),
    ];
    let mut target = Target::proxy_pair(ScenarioKind::Meshwork, ports.client_outbound, mode, Vec::new(), keep);
    target.wait_ready(&[ports.client_admin, ports.echo_admin]).await?;
    Ok(target)
}
