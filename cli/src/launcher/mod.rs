//! `mesh up`: the whole mesh on one machine. Issues certificates, starts every
//! sidecar and then every app (an app must never call out before its sidecar
//! listens), waits until each sidecar reports ready (which includes its app's
//! health), prints where everything is, renews certificates before they
//! expire, and on Ctrl-C or SIGTERM stops apps first, then sidecars.

mod children;
mod ports;
mod probe;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use meshwork_config::MeshConfig;

use crate::{certs, demo, serve, signals};
use children::Supervisor;
use probe::AdminProbe;

#[derive(clap::Args)]
pub struct UpArgs {
    /// The mesh description.
    #[arg(long, default_value = "mesh.toml", env = "MESH_CONFIG")]
    config: PathBuf,
    /// Once the mesh is ready, walk through the shop (register, browse, fill a
    /// cart, check out) and print each step.
    #[arg(long)]
    demo: bool,
    /// How long to wait for every sidecar and app to become ready.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
}

/// How long a child gets to finish in-flight work after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One process of the mesh, as the launcher starts it.
struct Process {
    label: String,
    args: Vec<String>,
}

pub async fn up(args: UpArgs) -> Result<()> {
    let config_path = std::path::absolute(&args.config).context("resolving the config path")?;
    let config = MeshConfig::load(&config_path)?;
    for name in config.services.keys() {
        if !serve::known_service(name) {
            bail!(
                "{}: services.{name}: `mesh up` runs the shop's services (users, catalog, cart, payments), not '{name}'",
                config_path.display()
            );
        }
    }
    ports::check_free(&config)?;

    for name in certs::ensure(&config)? {
        println!("mesh: issued certificate for {}", config.spiffe_id(&name));
    }
    let data_dir = config.state_dir.join("data");
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;

    let exe = std::env::current_exe().context("finding the mesh binary")?;
    let sidecars = sidecar_processes(&config, &config_path);
    let apps = app_processes(&config, &data_dir);
    let label_width = sidecars.iter().chain(&apps).map(|p| p.label.len()).max().unwrap_or(0);
    let mut supervisor = Supervisor::new(label_width);
    let mut pids = Vec::new();

    let started = start_and_wait(
        &mut supervisor,
        &mut pids,
        &exe,
        &config,
        &sidecars,
        &apps,
        args.ready_timeout,
    )
    .await;
    if let Err(e) = started {
        stop_all(&mut supervisor, &apps, &sidecars).await;
        return Err(e);
    }
    print_table(&config, &pids);

    if args.demo
        && let Err(e) = demo::walkthrough(&config).await
    {
        eprintln!("mesh: the demo failed: {e:#}");
    }
    println!("mesh: up; press Ctrl-C to stop");

    // Check well within the renewal window, so a leaf never gets close to expiry.
    let mut renewal = tokio::time::interval((certs::renew_before(&config) / 4).max(Duration::from_secs(30)));
    renewal.tick().await;
    let shutdown = signals::terminated();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            exit = supervisor.next_exit() => {
                eprintln!("mesh: {} {}", exit.name, exit.describe());
                if supervisor.is_empty() {
                    bail!("every process of the mesh has ended");
                }
            }
            _ = renewal.tick() => renew(&config).await,
        }
    }
    println!("mesh: stopping");
    stop_all(&mut supervisor, &apps, &sidecars).await;
    println!("mesh: stopped");
    Ok(())
}

fn sidecar_processes(config: &MeshConfig, config_path: &Path) -> Vec<Process> {
    config
        .workload_names()
        .map(|name| Process {
            label: format!("{name}-proxy"),
            args: vec![
                "proxy".into(),
                "--config".into(),
                config_path.display().to_string(),
                "--name".into(),
                name.into(),
            ],
        })
        .collect()
}

fn app_processes(config: &MeshConfig, data_dir: &Path) -> Vec<Process> {
    config
        .services
        .iter()
        .map(|(name, service)| Process {
            label: name.clone(),
            args: vec![
                "serve".into(),
                name.clone(),
                "--listen".into(),
                service.app.to_string(),
                "--sidecar".into(),
                service.outbound.to_string(),
                "--data-dir".into(),
                data_dir.display().to_string(),
            ],
        })
        .collect()
}

/// Starts the sidecars, waits until they are live, starts the apps, and waits
/// until every sidecar is ready. A process that ends on the way is reported
/// by name.
async fn start_and_wait(
    supervisor: &mut Supervisor,
    pids: &mut Vec<(String, u32)>,
    exe: &Path,
    config: &MeshConfig,
    sidecars: &[Process],
    apps: &[Process],
    ready_timeout: Duration,
) -> Result<()> {
    let admins: Vec<SocketAddr> = config
        .workload_names()
        .filter_map(|n| config.sidecar(n))
        .map(|s| s.admin)
        .collect();
    let probe = AdminProbe::new();
    let deadline = tokio::time::Instant::now() + ready_timeout;

    for (processes, path) in [(sidecars, "/live"), (apps, "/ready")] {
        for process in processes {
            let pid = supervisor.spawn(&process.label, exe, &process.args)?;
            pids.push((process.label.clone(), pid));
        }
        tokio::select! {
            _ = probe.wait_all(&admins, path) => {}
            exit = supervisor.next_exit() => bail!("{} {} during start-up", exit.name, exit.describe()),
            _ = tokio::time::sleep_until(deadline) => {
                let mut waiting = Vec::new();
                for (name, admin) in config.workload_names().zip(&admins) {
                    if !probe.ok(*admin, path).await {
                        waiting.push(name);
                    }
                }
                bail!("not ready within {ready_timeout:?}: {}", waiting.join(", "));
            }
        }
    }
    Ok(())
}

async fn stop_all(supervisor: &mut Supervisor, apps: &[Process], sidecars: &[Process]) {
    let labels = |ps: &[Process]| ps.iter().map(|p| p.label.clone()).collect::<Vec<_>>();
    // Apps first, so that no app is left calling a sidecar that is gone;
    // the sidecars then drain what is still in flight.
    supervisor.stop(&labels(apps), STOP_GRACE).await;
    supervisor.stop(&labels(sidecars), STOP_GRACE).await;
}

async fn renew(config: &MeshConfig) {
    let config = config.clone();
    match tokio::task::spawn_blocking(move || certs::ensure(&config).map(|names| (config, names))).await {
        Ok(Ok((config, names))) => {
            for name in names {
                println!("mesh: renewed certificate for {}", config.spiffe_id(&name));
            }
        }
        Ok(Err(e)) => eprintln!("mesh: certificate renewal failed: {e:#}"),
        Err(e) => eprintln!("mesh: certificate renewal task failed: {e}"),
    }
}

fn print_table(config: &MeshConfig, pids: &[(String, u32)]) {
    let pid = |label: &str| {
        pids.iter()
            .find(|(l, _)| l == label)
            .map(|(_, p)| p.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let dash = || "-".to_string();
    println!();
    println!(
        "{:<10} {:<16} {:<16} {:<16} {:<16} {:>8} {:>8}  READY",
        "WORKLOAD", "APP", "INBOUND (mTLS)", "OUTBOUND", "ADMIN", "APP PID", "PROXY"
    );
    for name in config.workload_names() {
        let Some(sidecar) = config.sidecar(name) else { continue };
        let (app, inbound) = match sidecar.service {
            Some(s) => (s.app.to_string(), s.inbound.to_string()),
            None => (dash(), dash()),
        };
        let app_pid = if sidecar.service.is_some() { pid(name) } else { dash() };
        println!(
            "{:<10} {:<16} {:<16} {:<16} {:<16} {:>8} {:>8}  yes",
            name,
            app,
            inbound,
            sidecar.outbound,
            sidecar.admin,
            app_pid,
            pid(&format!("{name}-proxy"))
        );
    }
    println!();
}
