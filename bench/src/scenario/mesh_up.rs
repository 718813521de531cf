//! `meshwork-up`: the `meshwork` path as `mesh up` runs it. The launcher
//! starts both sidecars from the same mesh.toml, receives their spans for
//! its dashboard, scrapes their metrics and serves the dashboard; the echo
//! server is an app it waits for but does not start. The launcher is
//! measured alone, beside the two sidecars: its CPU and memory are what the
//! dashboard costs a mesh under load (issue 17).

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use super::{
    Proxy, ProxyChild, Target, free_ports, http_get,
    meshwork::{Ports, config_text},
    pki::{self, CLIENT, SERVICE},
};
use crate::{
    args::ScenarioKind,
    procstat::{self, Scope},
};

/// The launcher stops its children with a grace of its own (10 s); a
/// sidecar with nothing in flight ends at once.
const LAUNCHER_GRACE: Duration = Duration::from_secs(15);

/// `mesh up --config <config> --dashboard <dashboard>`, its output in `log`,
/// stopped by SIGTERM (so that it stops its children) when dropped. Its
/// children's spans go to its own receiver, as on a new machine.
pub(crate) fn spawn_launcher(mesh: &Path, config: &Path, dashboard: SocketAddr, log: &Path) -> Result<ProxyChild> {
    let mut command = Command::new(mesh);
    command
        .arg("up")
        .arg("--config")
        .arg(config)
        .arg("--dashboard")
        .arg(dashboard.to_string())
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    Ok(ProxyChild::spawn("mesh up", command, log)?.with_stop_grace(LAUNCHER_GRACE))
}

/// Starts `mesh up` (the `mesh` binary) in front of the echo server at `echo`.
pub async fn start(mesh: &Path, echo: SocketAddr) -> Result<Target> {
    let dir = pki::mesh_dir("up")?;
    let ports = Ports::free()?;
    let [dashboard] = free_ports()?;
    let config = dir.path().join("mesh.toml");
    std::fs::write(&config, config_text(dir.path(), echo, &ports)).context("writing mesh.toml")?;
    let launcher = spawn_launcher(mesh, &config, dashboard, &dir.path().join("mesh-up.log"))?;
    let launcher_pid = launcher.pid();
    let mut target = Target {
        kind: ScenarioKind::MeshworkUp,
        addr: ports.client_outbound,
        mode: format!(
            "`{} up`: its 2 sidecars, and the launcher itself measured alone (dashboard at http://{dashboard}/)",
            mesh.display()
        ),
        proxies: Vec::new(),
        children: vec![launcher],
        _keep: vec![Box::new(dir)],
    };
    target.wait_ready(&[ports.client_admin, ports.echo_admin]).await?;
    match http_get(dashboard, "/api/workloads").await {
        Ok((200, _)) => {}
        answer => bail!("the dashboard at {dashboard} does not answer: {answer:?}"),
    }
    let sidecar = |name: &str| -> Result<u32> {
        procstat::find_descendant(launcher_pid, &["--name", name])?
            .with_context(|| format!("no sidecar `--name {name}` under the launcher (pid {launcher_pid})"))
    };
    target.proxies = vec![
        Proxy {
            role: "outbound",
            pid: Some(sidecar(CLIENT)?),
            scope: Scope::Tree,
        },
        Proxy {
            role: "inbound",
            pid: Some(sidecar(SERVICE)?),
            scope: Scope::Tree,
        },
        Proxy {
            role: "launcher",
            pid: Some(launcher_pid),
            scope: Scope::Process,
        },
    ];
    Ok(target)
}
