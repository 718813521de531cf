//! `--soak 30m`: a long run in which nothing may grow. `mesh up` runs the
//! `bench` client's sidecar and two replicas of the echo service's (the
//! sidecars as the shop's run: one thread, every call traced, spans to the
//! launcher's dashboard); the echo replicas are servers in this process.
//! Through them go a fixed rate of unary calls and a few server-streaming
//! calls at a time, all with a deadline; a fault aborts a share of calls;
//! every few minutes one replica is restarted (its app stopped and started
//! again, its sidecar killed and restarted by `mesh up`). Each sample period
//! gives one row: calls and errors, latency, and each sidecar's RSS, open
//! connections and CPU per call.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use crate::{
    echo::EchoServer,
    load::{self, LoadResult},
    plan::{CallKind, Plan},
    procstat::{self, ProcSample, Scope},
    scenario::{ProxyChild, http_get, pki, spawn_launcher},
};

/// Replicas of the echo service; one is restarted at a time.
const REPLICAS: u16 = 2;
/// Server-streaming calls kept in flight beside the unary rate.
const STREAM_CONCURRENCY: usize = 4;
const STREAM_MESSAGES: u32 = 20;
const PAYLOAD: usize = 100;
/// The deadline of every call when `--deadline` gives none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);
/// How long a restarted replica's app stays down.
const REPLICA_DOWN: Duration = Duration::from_millis(500);
/// How long a restarted replica may take to be ready again (`mesh up` waits
/// 200 ms before starting its sidecar again).
const REPLICA_BACK: Duration = Duration::from_secs(15);
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the soak was asked to do.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub duration: Duration,
    pub sample: Duration,
    pub restart_every: Duration,
    /// Share of calls the fault aborts with ABORTED, 0 to 100.
    pub fault_percent: f64,
    pub rate: u32,
    pub deadline: Duration,
}

/// One sample period.
#[derive(Debug, Clone)]
pub struct SoakRow {
    /// End of the period, from the start of the soak.
    pub at: Duration,
    pub unary: LoadResult,
    pub streams: LoadResult,
    /// Replica restarts made during the period.
    pub restarts: u32,
    /// Per sidecar (`bench`, `echo`, `echo-1`) at the end of the period.
    pub sidecars: Vec<SidecarSample>,
    /// The launcher's own RSS, bytes.
    pub launcher_rss: u64,
}

#[derive(Debug, Clone)]
pub struct SidecarSample {
    pub name: String,
    pub rss: u64,
    /// Open connections on both sides, from its `/metrics`.
    pub open_connections: Option<u64>,
    /// CPU over the period; None when it was restarted during it.
    pub cpu: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct SoakReport {
    pub plan: SoakPlan,
    pub rows: Vec<SoakRow>,
}

/// The soak's ports: replica `k` of the echo service has its app, inbound,
/// outbound and admin at `base + k × step` (+0 … +3); after the last replica
/// come the client's outbound and admin and the dashboard.
struct Layout {
    base: u16,
    step: u16,
}

impl Layout {
    const STEP: u16 = 4;
    const AFTER_REPLICAS: u16 = 3;

    /// A run of free ports for the whole mesh (all bound at once, then released).
    fn find() -> Result<Layout> {
        let span = Self::STEP * REPLICAS + Self::AFTER_REPLICAS;
        for attempt in 0..100u32 {
            let base = 20_000 + port_offset(attempt);
            let held: std::io::Result<Vec<_>> = (base..base + span)
                .map(|port| std::net::TcpListener::bind(("127.0.0.1", port)))
                .collect();
            if held.is_ok() {
                return Ok(Layout { base, step: Self::STEP });
            }
        }
        bail!("found no run of {span} free ports on 127.0.0.1")
    }

    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }
    fn replica(&self, replica: u16, offset: u16) -> SocketAddr {
        self.addr(self.base + replica * self.step + offset)
    }
    fn app(&self, replica: u16) -> SocketAddr {
        self.replica(replica, 0)
    }
    fn admin(&self, replica: u16) -> SocketAddr {
        self.replica(replica, 3)
    }
    fn client_outbound(&self) -> SocketAddr {
        self.replica(REPLICAS, 0)
    }
    fn client_admin(&self) -> SocketAddr {
        self.replica(REPLICAS, 1)
    }
    fn dashboard(&self) -> SocketAddr {
        self.replica(REPLICAS, 2)
    }

    fn config_text(&self, state_dir: &Path, fault_percent: f64) -> String {
        let (app, inbound, outbound, admin) = (self.app(0), self.replica(0, 1), self.replica(0, 2), self.admin(0));
        format!(
            r#"# Written by meshwork-bench --soak for one run.
trust_domain = "{td}"
state_dir = '{state}'
leaf_lifetime = "24h"
replica_port_step = {step}

[services.{service}]
app = "{app}"
inbound = "{inbound}"
outbound = "{outbound}"
admin = "{admin}"
replicas = {REPLICAS}
grpc_services = ["meshwork.echo.v1.EchoService"]
allow = [{{ from = "{client}" }}]
faults = [{{ abort = {{ percent = {fault_percent}, status = "ABORTED" }} }}]

[clients.{client}]
outbound = "{client_outbound}"
admin = "{client_admin}"
"#,
            td = pki::TRUST_DOMAIN,
            state = state_dir.display(),
            step = self.step,
            service = pki::SERVICE,
            client = pki::CLIENT,
            client_outbound = self.client_outbound(),
            client_admin = self.client_admin(),
        )
    }
}

/// Where to look for free ports, from the clock and the pid, so that two
/// runs at once (tests) look in different places.
fn port_offset(attempt: u32) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = nanos ^ std::process::id().wrapping_mul(2_654_435_761) ^ attempt.wrapping_mul(40_503);
    u16::try_from(mixed % 30_000).unwrap_or(0)
}

/// The running mesh: the launcher and the echo replicas.
struct Mesh {
    layout: Layout,
    echo: Vec<Option<EchoServer>>,
    launcher: ProxyChild,
    _dir: tempfile::TempDir,
}

impl Mesh {
    async fn start(mesh_bin: &Path, plan: &SoakPlan) -> Result<Mesh> {
        let dir = pki::mesh_dir("soak")?;
        let layout = Layout::find()?;
        let echo = (0..REPLICAS)
            .map(|r| EchoServer::start_on(layout.app(r), 1).map(Some))
            .collect::<Result<Vec<_>>>()?;
        let config = dir.path().join("mesh.toml");
        std::fs::write(&config, layout.config_text(dir.path(), plan.fault_percent)).context("writing mesh.toml")?;
        let launcher = spawn_launcher(mesh_bin, &config, layout.dashboard(), &dir.path().join("mesh-up.log"))?;
        let mut mesh = Mesh {
            layout,
            echo,
            launcher,
            _dir: dir,
        };
        mesh.wait_ready().await?;
        Ok(mesh)
    }

    fn admins(&self) -> Vec<SocketAddr> {
        let mut admins = vec![self.layout.client_admin()];
        admins.extend((0..REPLICAS).map(|r| self.layout.admin(r)));
        admins
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.launcher.check_running()?;
            let mut waiting = None;
            for admin in self.admins() {
                if !matches!(http_get(admin, "/ready").await, Ok((200, _))) {
                    waiting = Some(admin);
                }
            }
            if waiting.is_none() && load::probe(self.layout.client_outbound()).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the soak's mesh was not ready after {START_TIMEOUT:?} (waiting for {waiting:?}); mesh up said:\n{}",
                    self.launcher.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sidecar processes by name, as found now.
    fn sidecars(&self) -> Vec<(String, Option<u32>)> {
        let launcher = self.launcher.pid();
        let mut found = vec![(
            pki::CLIENT.to_string(),
            procstat::find_descendant(launcher, &["--name", pki::CLIENT])
                .ok()
                .flatten(),
        )];
        for replica in 0..REPLICAS {
            let name = match replica {
                0 => pki::SERVICE.to_string(),
                r => format!("{}-{r}", pki::SERVICE),
            };
            let args = ["--name", pki::SERVICE, "--replica", &replica.to_string()].map(String::from);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            found.push((name, procstat::find_descendant(launcher, &args).ok().flatten()));
        }
        found
    }

    /// Stops `replica`'s app, kills its sidecar (`mesh up` starts it
    /// again), starts the app again and waits until the new sidecar is ready.
    async fn restart_replica(&mut self, replica: u16, sidecar: Option<u32>) -> Result<()> {
        self.echo[usize::from(replica)] = None;
        if let Some(pid) = sidecar.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        tokio::time::sleep(REPLICA_DOWN).await;
        self.echo[usize::from(replica)] = Some(EchoServer::start_on(self.layout.app(replica), 1)?);
        // Back when its new sidecar is ready, so that the next row reads the new process.
        let admin = self.layout.admin(replica);
        let deadline = Instant::now() + REPLICA_BACK;
        while !matches!(http_get(admin, "/ready").await, Ok((200, _))) {
            self.launcher.check_running()?;
            if Instant::now() >= deadline {
                bail!("echo replica {replica} was not ready again {REPLICA_BACK:?} after its restart");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Runs the soak through `mesh up` (the `mesh` binary beside the plan's sidecar binary).
pub async fn run(plan: &Plan, soak: SoakPlan) -> Result<SoakReport> {
    let mesh_bin = match &plan.mesh {
        crate::plan::MeshMode::Process(sidecar) => sidecar.with_file_name("mesh"),
        crate::plan::MeshMode::InProcess => {
            bail!("--soak runs `mesh up`, so it needs sidecar processes, not --in-process")
        }
    };
    if !mesh_bin.is_file() {
        bail!("--soak runs `mesh up`: no `mesh` binary at {}", mesh_bin.display());
    }
    let mut mesh = Mesh::start(&mesh_bin, &soak).await?;
    eprintln!(
        "soak: {} through `mesh up` ({}), a row every {}",
        humantime::format_duration(soak.duration),
        mesh_bin.display(),
        humantime::format_duration(soak.sample)
    );
    let clients = load::connect_many(mesh.layout.client_outbound(), 1).await?;
    let unary_calls = load::echo_calls(&clients, CallKind::Unary, PAYLOAD, Some(soak.deadline));
    let stream = CallKind::ServerStream {
        messages: STREAM_MESSAGES,
    };
    let stream_calls = load::echo_calls(&clients, stream, PAYLOAD, Some(soak.deadline));
    let started = Instant::now();
    let mut next_restart = started + soak.restart_every;
    let mut next_replica = 0u16;
    let mut before = read(&mesh);
    let mut rows = Vec::new();
    while started.elapsed() < soak.duration {
        let period = soak.sample.min(soak.duration.saturating_sub(started.elapsed()));
        let period_end = Instant::now() + period;
        let unary = load::open_loop(&unary_calls, soak.rate, period);
        let streams = load::closed_loop(&stream_calls, STREAM_CONCURRENCY, period);
        let restarts = async {
            let mut restarts = 0;
            while next_restart < period_end {
                tokio::time::sleep_until(next_restart).await;
                let sidecar = mesh.sidecars()[usize::from(next_replica) + 1].1;
                mesh.restart_replica(next_replica, sidecar).await?;
                next_replica = (next_replica + 1) % REPLICAS;
                next_restart += soak.restart_every;
                restarts += 1;
            }
            anyhow::Ok(restarts)
        };
        let (unary, streams, restarts) = tokio::join!(unary, streams, restarts);
        let restarts = restarts?;
        mesh.launcher.check_running()?;
        let after = read(&mesh);
        let row = row(started.elapsed(), unary, streams, restarts, &before, &after, &mesh).await;
        eprintln!("  {}", row.summary());
        rows.push(row);
        before = after;
    }
    Ok(SoakReport { plan: soak, rows })
}

/// Each sidecar's pid and reading, and the launcher's.
struct Reading {
    sidecars: Vec<(String, Option<u32>, Option<ProcSample>)>,
    launcher: Option<ProcSample>,
}

fn read(mesh: &Mesh) -> Reading {
    Reading {
        sidecars: mesh
            .sidecars()
            .into_iter()
            .map(|(name, pid)| {
                let sample = pid.and_then(|p| procstat::sample(p, Scope::Tree).ok());
                (name, pid, sample)
            })
            .collect(),
        launcher: procstat::sample(mesh.launcher.pid(), Scope::Process).ok(),
    }
}

async fn row(
    at: Duration,
    unary: LoadResult,
    streams: LoadResult,
    restarts: u32,
    before: &Reading,
    after: &Reading,
    mesh: &Mesh,
) -> SoakRow {
    let admins = mesh.admins();
    let mut sidecars = Vec::new();
    for (i, (name, pid, sample)) in after.sidecars.iter().enumerate() {
        let earlier = before.sidecars.get(i);
        // The same process at both ends of the period: its CPU over it.
        let cpu = match (earlier, sample) {
            (Some((_, old_pid, Some(old))), Some(new)) if old_pid == pid => Some(new.cpu.saturating_sub(old.cpu)),
            _ => None,
        };
        let open_connections = match admins.get(i) {
            Some(&admin) => open_connections(admin).await,
            None => None,
        };
        sidecars.push(SidecarSample {
            name: name.clone(),
            rss: sample.map_or(0, |s| s.rss),
            open_connections,
            cpu,
        });
    }
    SoakRow {
        at,
        unary,
        streams,
        restarts,
        sidecars,
        launcher_rss: after.launcher.map_or(0, |s| s.rss),
    }
}

/// The sum of a sidecar's `meshwork_open_connections` gauges. One gauge is
/// all the soak reads, so a line scan of the text format does (the
/// dashboard parses the whole exposition with a parser crate).
async fn open_connections(admin: SocketAddr) -> Option<u64> {
    let (status, body) = http_get(admin, "/metrics").await.ok()?;
    if status != 200 {
        return None;
    }
    let values = body
        .lines()
        .filter(|line| line.starts_with("meshwork_open_connections"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok());
    Some(values.sum::<f64>() as u64)
}

impl SoakRow {
    /// Calls answered in the period, unary and streaming, successful or not.
    pub fn calls(&self) -> u64 {
        self.unary.calls + self.unary.error_count() + self.streams.calls + self.streams.error_count()
    }

    /// Errors of both loops by status.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        let mut errors = self.unary.errors.clone();
        for (code, n) in &self.streams.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
        errors
    }

    /// CPU per call of the sidecars that ran the whole period.
    fn cpu_per_call(&self, sidecar: &SidecarSample) -> Option<f64> {
        let calls = self.calls();
        Some(sidecar.cpu?.as_secs_f64() * 1e6 / calls.max(1) as f64)
    }

    fn summary(&self) -> String {
        let sidecars: Vec<String> = self
            .sidecars
            .iter()
            .map(|s| format!("{} {:.1} MiB", s.name, mib(s.rss)))
            .collect();
        format!(
            "{}: {} calls, errors {:?}, {} restart(s); {}",
            humantime::format_duration(round(self.at)),
            self.calls(),
            self.errors(),
            self.restarts,
            sidecars.join(", ")
        )
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().round() as u64)
}

impl SoakReport {
    pub fn markdown(&self) -> String {
        let plan = &self.plan;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Soak: {} through `mesh up`; {} unary calls/s and {STREAM_CONCURRENCY} server streams of \
             {STREAM_MESSAGES} messages at a time, every call with a {} deadline; {} % of calls aborted \
             (ABORTED) by a fault; one of {REPLICAS} echo replicas restarted every {}.\n",
            humantime::format_duration(plan.duration),
            plan.rate,
            humantime::format_duration(plan.deadline),
            plan.fault_percent,
            humantime::format_duration(plan.restart_every),
        );
        let names: Vec<&str> = self
            .rows
            .first()
            .map(|r| r.sidecars.iter().map(|s| s.name.as_str()).collect())
            .unwrap_or_default();
        let _ = write!(out, "| at | calls | errors | unary p50 / p99 ms | restarts |");
        for name in &names {
            let _ = write!(out, " {name}: RSS MiB / conns / CPU µs/call |");
        }
        out.push_str(" launcher RSS MiB |\n|--:|--:|---|--:|--:|");
        for _ in &names {
            out.push_str("--:|");
        }
        out.push_str("--:|\n");
        for row in &self.rows {
            let errors: Vec<String> = row.errors().iter().map(|(code, n)| format!("{code} {n}")).collect();
            let _ = write!(
                out,
                "| {} | {} | {} | {:.3} / {:.3} | {} |",
                humantime::format_duration(round(row.at)),
                row.calls(),
                if errors.is_empty() {
                    "–".into()
                } else {
                    errors.join(", ")
                },
                row.unary.latency.p50.as_secs_f64() * 1e3,
                row.unary.latency.p99.as_secs_f64() * 1e3,
                row.restarts,
            );
            for sidecar in &row.sidecars {
                let conns = sidecar.open_connections.map_or("–".into(), |c| c.to_string());
                let cpu = row
                    .cpu_per_call(sidecar)
                    .map_or("restarted".into(), |c| format!("{c:.1}"));
                let _ = write!(out, " {:.1} / {conns} / {cpu} |", mib(sidecar.rss));
            }
            let _ = writeln!(out, " {:.1} |", mib(row.launcher_rss));
        }
        out
    }
}

impl SoakPlan {
    pub fn from_args(args: &crate::BenchArgs, duration: Duration) -> Result<SoakPlan> {
        if args.soak_sample.is_zero() || args.soak_restart_every.is_zero() {
            bail!("--soak-sample and --soak-restart-every must be above zero");
        }
        if !(0.0..=100.0).contains(&args.soak_fault_percent) {
            bail!(
                "--soak-fault-percent must be from 0 to 100, got {}",
                args.soak_fault_percent
            );
        }
        Ok(SoakPlan {
            duration,
            sample: args.soak_sample,
            restart_every: args.soak_restart_every,
            fault_percent: args.soak_fault_percent,
            rate: args.rate,
            deadline: args.deadline.unwrap_or(DEFAULT_DEADLINE),
        })
    }
}
