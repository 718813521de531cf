//! `mesh up`: the whole mesh on one machine. Issues certificates, starts every
//! sidecar and then every app (an app must never call out before its sidecar
//! listens), waits until each sidecar reports ready (which includes its app's
//! health), prints where everything is, renews certificates before they
//! expire, and on Ctrl-C or SIGTERM stops apps first, then sidecars.

mod children;
mod lines;
mod ports;
mod probe;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use meshwork_config::{FileStamp, GATEWAY_WORKLOAD, MeshConfig, SidecarSpec, app_env};

use crate::{certs, dashboard, demo, serve, signals};
use children::{Event, ProcessSpec as Process, Supervisor};
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
    /// Where the dashboard listens (another free port when this one is taken).
    #[arg(long, default_value = "127.0.0.1:7500")]
    dashboard: SocketAddr,
}

/// How long a child gets to finish in-flight work after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The binaries the launcher starts: itself for the apps (`mesh serve`),
/// and for sidecars the lean `mesh-proxy` beside it (built with it), else
/// itself as `mesh proxy`.
struct Programs {
    mesh: PathBuf,
    sidecar: PathBuf,
    sidecar_args: &'static [&'static str],
    /// Set on every child (where to send spans).
    env: Vec<(String, String)>,
}

impl Programs {
    fn find() -> Result<Self> {
        let mesh = std::env::current_exe().context("finding the mesh binary")?;
        let lean = mesh.with_file_name("mesh-proxy");
        Ok(if lean.is_file() {
            Programs {
                mesh,
                sidecar: lean,
                sidecar_args: &[],
                env: Vec::new(),
            }
        } else {
            Programs {
                sidecar: mesh.clone(),
                mesh,
                sidecar_args: &["proxy"],
                env: Vec::new(),
            }
        })
    }
}

pub async fn up(args: UpArgs) -> Result<()> {
    // Before any child starts: a SIGTERM from now on stops them too.
    let shutdown = signals::terminated();
    tokio::pin!(shutdown);
    let config_path = std::path::absolute(&args.config).context("resolving the config path")?;
    // Checked against the contracts it names: a typo in a method is refused here.
    let config = load(&config_path)?;
    // From the version just read, so an edit made during start-up is seen too.
    let mut watch = ConfigWatch::new(&config);
    ports::check_free(&config)?;

    for name in certs::ensure(&config)? {
        println!("mesh: issued certificate for {}", config.spiffe_id(&name));
    }
    let data_dir = config.state_dir.join("data");
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;

    let board = dashboard::Board::default();
    let mut programs = Programs::find()?;
    programs.env = dashboard::collect_traces(&board).await?;
    let sidecars = sidecar_processes(&config, &config_path, &programs);
    let mut apps = app_processes(&config, &data_dir, &programs);
    apps.extend(gateway_processes(&config, &config_path, &programs));
    let label_width = sidecars.iter().chain(&apps).map(|p| p.label.len()).max().unwrap_or(0);
    let mut supervisor = Supervisor::new(label_width);
    board.set_config(&config);
    supervisor.report_to(board.clone());
    let dashboard_addr = dashboard::start(board.clone(), args.dashboard).await?;
    let mut pids = Vec::new();

    let started = tokio::select! {
        started = start_and_wait(&mut supervisor, &mut pids, &config, &sidecars, &apps, args.ready_timeout) => Some(started),
        _ = &mut shutdown => None,
    };
    match started {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            stop_all(&mut supervisor, &apps, &sidecars).await;
            return Err(e);
        }
        None => {
            stop_everything(&mut supervisor, &apps, &sidecars).await;
            return Ok(());
        }
    }
    print_table(&config, &pids);
    println!("mesh: dashboard at http://{dashboard_addr}/");
    if let Some(gateway) = &config.gateway {
        let scheme = if gateway.tls.is_some() { "https" } else { "http" };
        println!("mesh: storefront at {scheme}://{}/", gateway.listen);
    }

    if args.demo {
        let walked = tokio::select! {
            walked = demo_with_trace_link(&config, &board, dashboard_addr) => Some(walked),
            _ = &mut shutdown => None,
        };
        match walked {
            Some(Ok(())) => {}
            Some(Err(e)) => eprintln!("mesh: the demo failed: {e:#}"),
            None => {
                stop_everything(&mut supervisor, &apps, &sidecars).await;
                return Ok(());
            }
        }
    }
    println!("mesh: up; press Ctrl-C to stop");

    // Check well within the renewal window, so a leaf never gets close to expiry.
    let mut renewal = tokio::time::interval((certs::renew_before(&config) / 4).max(Duration::from_secs(30)));
    renewal.tick().await;
    let mut config = config;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            event = supervisor.next_event() => match event {
                Event::Exited(exit) => {
                    supervisor.restart_later(&exit, restart_policy(&config, &exit.name));
                    if supervisor.is_empty() && !supervisor.restarting() {
                        bail!("every process of the mesh has ended");
                    }
                }
                Event::Due(name) => supervisor.respawn(&name),
            },
            _ = renewal.tick() => renew(&config).await,
            _ = watch.tick() => {
                if let Some(edited) = watch.reload() {
                    match edited {
                        Ok(edited) => {
                            rescale(&mut supervisor, &programs, &config, &edited, &config_path, &data_dir).await;
                            board.set_config(&edited);
                            config = edited;
                        }
                        Err(e) => eprintln!("mesh: ignoring the edited config: {e}"),
                    }
                }
            }
        }
    }
    // The config as last applied: replicas may have been added or removed.
    let (mut apps, sidecars) = (
        app_processes(&config, &data_dir, &programs),
        sidecar_processes(&config, &config_path, &programs),
    );
    apps.extend(gateway_processes(&config, &config_path, &programs));
    stop_everything(&mut supervisor, &apps, &sidecars).await;
    Ok(())
}

/// The restart policy of the service a process label (`cart`, `cart-1`,
/// `cart-1-proxy`) belongs to; `always` for one no longer in the config.
fn restart_policy(config: &MeshConfig, label: &str) -> meshwork_config::Restart {
    let workload = label.strip_suffix("-proxy").unwrap_or(label);
    let service = config.services.get(workload).or_else(|| {
        let (name, replica) = workload.rsplit_once('-')?;
        replica.parse::<u16>().ok()?;
        config.services.get(name)
    });
    service.map(|s| s.restart).unwrap_or_default()
}

/// Stops every process on a SIGTERM or Ctrl-C, saying so.
async fn stop_everything(supervisor: &mut Supervisor, apps: &[Process], sidecars: &[Process]) {
    println!("mesh: stopping");
    stop_all(supervisor, apps, sidecars).await;
    println!("mesh: stopped");
}

/// mesh.toml, checked against the contracts it names.
fn load(path: &Path) -> Result<MeshConfig, meshwork_config::ConfigError> {
    let mesh = meshwork_contracts::Mesh::load(path)?;
    Ok(std::sync::Arc::unwrap_or_clone(mesh.config))
}

/// Notices edits to mesh.toml, polled: the launcher needs no more than a
/// second's latency, and polling sees editors that replace the file as well
/// as those that rewrite it.
struct ConfigWatch {
    path: PathBuf,
    seen: FileStamp,
    interval: tokio::time::Interval,
}

impl ConfigWatch {
    fn new(config: &MeshConfig) -> Self {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ConfigWatch {
            path: config.source.clone(),
            seen: config.source_stamp,
            interval,
        }
    }

    async fn tick(&mut self) {
        self.interval.tick().await;
    }

    /// The file, parsed, if it changed since last time.
    fn reload(&mut self) -> Option<Result<MeshConfig, meshwork_config::ConfigError>> {
        let now = FileStamp::of(&self.path);
        if !now.is_known() || now == self.seen {
            return None;
        }
        self.seen = now;
        Some(load(&self.path))
    }
}

/// Applies an edited mesh.toml to the running processes: starts replicas
/// (and workloads) it adds, stops those it removes. The sidecars pick up the
/// new endpoints and policy from the file themselves. Changes to a running
/// process's own addresses need a restart of `mesh up`, and are said so.
async fn rescale(
    supervisor: &mut Supervisor,
    programs: &Programs,
    old: &MeshConfig,
    new: &MeshConfig,
    config_path: &Path,
    data_dir: &Path,
) {
    let (old_sidecars, new_sidecars) = (
        sidecar_processes(old, config_path, programs),
        sidecar_processes(new, config_path, programs),
    );
    let (old_apps, new_apps) = (
        app_processes(old, data_dir, programs),
        app_processes(new, data_dir, programs),
    );
    let missing_from = |from: &[Process], of: &[Process]| -> Vec<String> {
        of.iter()
            .filter(|p| !from.iter().any(|q| q.label == p.label))
            .map(|p| p.label.clone())
            .collect()
    };

    let (gone_apps, gone_sidecars) = (
        missing_from(&new_apps, &old_apps),
        missing_from(&new_sidecars, &old_sidecars),
    );
    if !gone_apps.is_empty() || !gone_sidecars.is_empty() {
        println!(
            "mesh: mesh.toml changed; stopping {}",
            [&gone_apps[..], &gone_sidecars[..]].concat().join(", ")
        );
        supervisor.stop(&gone_apps, STOP_GRACE).await;
        supervisor.stop(&gone_sidecars, STOP_GRACE).await;
    }
    for process in new_sidecars.iter().chain(&new_apps) {
        if let Some(before) = old_sidecars.iter().chain(&old_apps).find(|p| p.label == process.label)
            && before.args != process.args
        {
            eprintln!(
                "mesh: {}'s addresses changed in mesh.toml; restart `mesh up` to apply that",
                process.label
            );
        }
    }

    let added: Vec<&Process> = new_sidecars
        .iter()
        .filter(|p| !old_sidecars.iter().any(|q| q.label == p.label))
        .chain(new_apps.iter().filter(|p| !old_apps.iter().any(|q| q.label == p.label)))
        .collect();
    if added.is_empty() {
        return;
    }
    if let Err(e) = certs::ensure(new) {
        eprintln!("mesh: cannot start what mesh.toml added: {e:#}");
        return;
    }
    // Sidecars come first in `added`, so no new app calls out before its sidecar exists.
    for process in added {
        match supervisor.spawn(process) {
            Ok(pid) => println!("mesh: mesh.toml changed; started {} (pid {pid})", process.label),
            Err(e) => eprintln!("mesh: cannot start {}: {e:#}", process.label),
        }
    }
}

/// How a sidecar's app is named in logs and the table: the service's name
/// for replica 0, with the replica's index for the others (stable when a
/// service is scaled up or down).
pub(crate) fn workload_label(spec: &SidecarSpec<'_>) -> String {
    match spec.replica {
        0 => spec.name.to_string(),
        r => format!("{}-{r}", spec.name),
    }
}

fn sidecar_processes(config: &MeshConfig, config_path: &Path, programs: &Programs) -> Vec<Process> {
    config
        .sidecars()
        .map(|spec| Process {
            label: format!("{}-proxy", workload_label(&spec)),
            program: programs.sidecar.clone(),
            args: [programs.sidecar_args, &["--config"]]
                .concat()
                .into_iter()
                .map(String::from)
                .chain([
                    config_path.display().to_string(),
                    "--name".into(),
                    spec.name.into(),
                    "--replica".into(),
                    spec.replica.to_string(),
                ])
                .collect(),
            env: programs.env.clone(),
            workdir: None,
        })
        .collect()
}

/// Whether `mesh up` starts service `name`'s app: by its `command`, or as
/// the shop's built-in app of that name. Otherwise someone else does.
fn starts_app(name: &str, service: &meshwork_config::Service) -> bool {
    !service.command.is_empty() || serve::known_service(name)
}

/// How `mesh up` starts each app it starts: its `command`, or the shop's
/// built-in app of its name (`mesh serve`). Every app learns where it
/// stands from the `MESH_*` variables ([`app_env`]); replicas share their
/// service's data folder.
fn app_processes(config: &MeshConfig, data_dir: &Path, programs: &Programs) -> Vec<Process> {
    config
        .sidecars()
        .filter_map(|spec| {
            let (service, app) = (spec.service?, spec.app?);
            // The launcher's own (where spans go), then where the app
            // stands, then what mesh.toml sets for it.
            let mut env = programs.env.clone();
            env.extend(
                [
                    (app_env::SERVICE, spec.name.to_string()),
                    (app_env::REPLICA, spec.replica.to_string()),
                    (app_env::LISTEN, app.to_string()),
                    (app_env::OUTBOUND, spec.outbound.to_string()),
                    (app_env::DATA_DIR, data_dir.display().to_string()),
                    ("OTEL_SERVICE_NAME", spec.name.to_string()),
                ]
                .map(|(k, v)| (k.to_string(), v)),
            );
            if let Some(url) = &service.database {
                env.push((app_env::DATABASE_URL.to_string(), url.as_str().to_owned()));
            }
            env.extend(service.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let (program, args) = match service.command.split_first() {
                Some((program, args)) => (user_program(program, service.workdir.as_deref()), args.to_vec()),
                None if serve::known_service(spec.name) => (
                    programs.mesh.clone(),
                    [
                        "serve",
                        spec.name,
                        "--listen",
                        &app.to_string(),
                        "--sidecar",
                        &spec.outbound.to_string(),
                        "--data-dir",
                        &data_dir.display().to_string(),
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                None => return None,
            };
            Some(Process {
                label: workload_label(&spec),
                program,
                args,
                env,
                workdir: service.workdir.clone(),
            })
        })
        .collect()
}

/// `mesh up --demo`: the walk over gRPC, then through the gateway, then the
/// link to the gRPC checkout's trace, found before the walk through the
/// gateway makes a second checkout.
async fn demo_with_trace_link(config: &MeshConfig, board: &dashboard::Board, dashboard_addr: SocketAddr) -> Result<()> {
    let stamp = demo::over_grpc(config).await?;
    // Only when the launcher is the collector; else the spans are elsewhere.
    let checkout = match board.collector() {
        None => board.traces.wait_for_root("CartService/Checkout").await,
        Some(_) => None,
    };
    demo::through_gateway(config, stamp).await?;
    if let Some(id) = checkout {
        println!("mesh: the checkout's trace: http://{dashboard_addr}/#traces/{id}");
    }
    Ok(())
}

/// The gateway's replicas (`mesh gateway`), started with the apps once
/// their sidecar is live, and the local Redis they share their rate-limit
/// counters in when the file asks for one (`rate_limit_store.redis =
/// "local"`). The replicas connect to Redis by themselves, whenever it is up.
fn gateway_processes(config: &MeshConfig, config_path: &Path, programs: &Programs) -> Vec<Process> {
    let Some(gateway) = config.gateway.as_ref() else {
        return Vec::new();
    };
    let mut env = programs.env.clone();
    env.push(("OTEL_SERVICE_NAME".to_string(), GATEWAY_WORKLOAD.to_string()));
    let mut processes: Vec<Process> = (0..gateway.replicas)
        .map(|replica| Process {
            label: match replica {
                0 => GATEWAY_WORKLOAD.to_string(),
                n => format!("{GATEWAY_WORKLOAD}-{n}"),
            },
            program: programs.mesh.clone(),
            args: vec![
                "gateway".into(),
                "--config".into(),
                config_path.display().to_string(),
                "--replica".into(),
                replica.to_string(),
            ],
            env: env.clone(),
            workdir: None,
        })
        .collect();
    if gateway.rate_limit_store.redis.as_deref() == Some("local") {
        processes.insert(
            0,
            Process {
                label: "redis".into(),
                program: PathBuf::from("redis-server"),
                // Counters only: nothing to keep across a restart.
                args: [
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &gateway.rate_limit_store.local_port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]
                .map(String::from)
                .to_vec(),
                env: Vec::new(),
                workdir: None,
            },
        );
    }
    processes
}

/// A program named by a relative path (`./reviews.py`) is found from the
/// app's working folder; a bare name (`python3`) on the `PATH`.
fn user_program(program: &str, workdir: Option<&Path>) -> PathBuf {
    let path = Path::new(program);
    match workdir {
        Some(dir) if path.is_relative() && path.components().count() > 1 => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// The apps `mesh up` does not start (no `command`, not built in): their
/// sidecars wait for someone else to start them.
fn external_apps(config: &MeshConfig) -> Vec<(String, SocketAddr)> {
    config
        .sidecars()
        .filter(|spec| {
            spec.service
                .is_some_and(|s| s.command.is_empty() && !serve::known_service(spec.name))
        })
        .filter_map(|spec| Some((workload_label(&spec), spec.app?)))
        .collect()
}

/// Starts the sidecars, waits until they are live, starts the apps, and waits
/// until every sidecar is ready. A process that ends on the way is reported
/// by name.
async fn start_and_wait(
    supervisor: &mut Supervisor,
    pids: &mut Vec<(String, u32)>,
    config: &MeshConfig,
    sidecars: &[Process],
    apps: &[Process],
    ready_timeout: Duration,
) -> Result<()> {
    let sidecar_admins: Vec<SocketAddr> = config.sidecars().map(|s| s.admin).collect();
    // The gateway's own admin port joins once the apps (the gateway among them) start.
    let all_admins: Vec<SocketAddr> = sidecar_admins
        .iter()
        .copied()
        .chain(config.gateway.iter().flat_map(|g| {
            (0..g.replicas).filter_map(|i| g.replica(i, config.replica_port_step).map(|(_, admin)| admin))
        }))
        .collect();
    let probe = AdminProbe::new();
    let deadline = tokio::time::Instant::now() + ready_timeout;

    for (processes, path) in [(sidecars, "/live"), (apps, "/ready")] {
        for process in processes {
            let pid = supervisor.spawn(process)?;
            pids.push((process.label.clone(), pid));
        }
        if path == "/ready" {
            for (label, app) in external_apps(config) {
                println!("mesh: waiting for {label}'s app at {app}: mesh.toml gives no command, so start it yourself");
            }
        }
        let admins = if path == "/live" { &sidecar_admins } else { &all_admins };
        tokio::select! {
            _ = probe.wait_all(admins, path) => {}
            exit = supervisor.next_exit() => bail!("{} {} during start-up", exit.name, exit.describe()),
            _ = tokio::time::sleep_until(deadline) => {
                let mut waiting = Vec::new();
                for spec in config.sidecars() {
                    if !probe.ok(spec.admin, path).await {
                        waiting.push(workload_label(&spec));
                    }
                }
                if let Some(gateway) = config.gateway.as_ref().filter(|_| path == "/ready")
                    && !probe.ok(gateway.admin, path).await
                {
                    waiting.push(GATEWAY_WORKLOAD.to_string());
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
    let or_dash = |addr: Option<SocketAddr>| addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    println!();
    println!(
        "{:<12} {:<16} {:<16} {:<16} {:<16} {:>8} {:>8}  READY",
        "WORKLOAD", "APP", "INBOUND (mTLS)", "OUTBOUND", "ADMIN", "APP PID", "PROXY"
    );
    for spec in config.sidecars() {
        let label = workload_label(&spec);
        let gateway = config.gateway.as_ref().filter(|_| spec.name == GATEWAY_WORKLOAD);
        let app_pid = match spec.service {
            Some(service) if service.command.is_empty() && !serve::known_service(spec.name) => "yours".into(),
            Some(_) => pid(&label),
            None if gateway.is_some() => pid(&label),
            None => "-".into(),
        };
        // The gateway's "app" is its public port.
        let app = spec.app.or(gateway.map(|g| g.listen));
        println!(
            "{:<12} {:<16} {:<16} {:<16} {:<16} {:>8} {:>8}  yes",
            label,
            or_dash(app),
            or_dash(spec.inbound),
            spec.outbound,
            spec.admin,
            app_pid,
            pid(&format!("{label}-proxy"))
        );
    }
    println!();
}
