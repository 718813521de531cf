//! The steps every scenario goes through, resolved from the command line.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};

use crate::args::{BenchArgs, ScenarioKind};

/// Which gRPC method a load step drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `EchoService/Unary`: one request, one response of the same size.
    Unary,
    /// `EchoService/ServerStream`: one request, `messages` responses.
    ServerStream { messages: u32 },
}

/// One measurement, run against every scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Each proxy's resident memory after start-up and a first call.
    Idle,
    /// `concurrency` callers, each sending its next call when the last one
    /// is answered, for as many calls as the path carries (throughput).
    Closed {
        kind: CallKind,
        concurrency: usize,
        payload: usize,
    },
    /// Calls started at a fixed rate whatever the answers do; latency counts
    /// from when each call should have started (no coordinated omission).
    Open { rate: u32, payload: usize },
    /// Memory per idle HTTP/2 connection to the outbound proxy.
    IdleConnections(usize),
    /// Memory per open, idle stream through both proxies.
    IdleStreams(usize),
}

impl Step {
    pub fn label(&self) -> String {
        match *self {
            Step::Idle => "idle".into(),
            Step::Closed {
                kind: CallKind::Unary,
                concurrency,
                payload,
            } => format!("unary {} ×{concurrency}", size(payload)),
            Step::Closed {
                kind: CallKind::ServerStream { messages },
                concurrency,
                payload,
            } => format!("server-stream {messages}×{} ×{concurrency}", size(payload)),
            Step::Open { rate, payload } => format!("unary {} @{rate}/s", size(payload)),
            Step::IdleConnections(n) => format!("idle conns ×{n}"),
            Step::IdleStreams(n) => format!("open streams ×{n}"),
        }
    }

    pub fn is_load(&self) -> bool {
        matches!(self, Step::Closed { .. } | Step::Open { .. })
    }
}

/// `100 B`, `16 KiB`, `1 MiB`.
pub fn size(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// How the Meshwork scenario runs its sidecars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshMode {
    /// Two sidecar processes of this binary (`mesh-proxy`, or `mesh proxy`).
    Process(PathBuf),
    /// Two sidecars on their own runtime inside this process.
    InProcess,
}

/// The resolved run: the scenarios, the steps, and how long each lasts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenarios: Vec<ScenarioKind>,
    pub steps: Vec<Step>,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub mesh: MeshMode,
    pub nginx_bin: Option<PathBuf>,
    pub nghttpx_bin: Option<PathBuf>,
    pub proxy_workers: usize,
    /// The deadline every load call carries, if any.
    pub deadline: Option<Duration>,
    /// Whether the sidecars export spans to the bench's own collector.
    pub collector: bool,
    /// Whether the open-loop step takes turns with direct calls (`--paired`).
    pub paired: bool,
    /// The headline steps the targets are judged on.
    pub headline: Step,
    pub fixed_rate: Step,
    pub high_concurrency: Option<Step>,
    /// Notes on how the plan was resolved (which `mesh` binary, fallbacks).
    pub notes: Vec<String>,
}

/// The concurrency the memory target is judged at.
pub const MEMORY_TARGET_CONCURRENCY: usize = 1024;

impl Plan {
    pub fn from_args(args: &BenchArgs) -> Result<Plan> {
        if args.scenarios.is_empty() {
            bail!("no scenarios to run");
        }
        if args.concurrency == 0 || args.connections == 0 || args.rate == 0 {
            bail!("--concurrency, --connections and --rate must be at least 1");
        }
        let (duration, warmup, idle_connections, idle_streams) = if args.quick {
            (
                Duration::from_millis(500),
                Duration::from_millis(200),
                args.idle_connections.min(20),
                args.idle_streams.min(200),
            )
        } else {
            (args.duration, args.warmup, args.idle_connections, args.idle_streams)
        };
        if duration.is_zero() {
            bail!("--duration must be above zero");
        }
        let unary = |concurrency, payload| Step::Closed {
            kind: CallKind::Unary,
            concurrency,
            payload,
        };
        let headline = unary(args.concurrency, args.payload);
        let fixed_rate = Step::Open {
            rate: args.rate,
            payload: args.payload,
        };
        // Memory first, on fresh processes: after heavy steps an allocator
        // reuses what it kept, and a connection or stream would look free.
        let mut steps = vec![Step::Idle];
        if idle_connections > 0 {
            steps.push(Step::IdleConnections(idle_connections));
        }
        if idle_streams > 0 {
            steps.push(Step::IdleStreams(idle_streams));
        }
        steps.extend([headline, fixed_rate]);
        let mut concurrencies: Vec<usize> = args
            .growth_concurrency
            .iter()
            .copied()
            .filter(|&c| c > 0 && c != args.concurrency)
            .collect();
        concurrencies.sort_unstable();
        concurrencies.dedup();
        steps.extend(concurrencies.iter().map(|&c| unary(c, args.payload)));
        let mut payloads: Vec<usize> = args
            .growth_payloads
            .iter()
            .copied()
            .filter(|&p| p != args.payload)
            .collect();
        payloads.sort_unstable();
        payloads.dedup();
        steps.extend(payloads.iter().map(|&p| unary(args.concurrency, p)));
        if args.stream_messages > 0 {
            steps.push(Step::Closed {
                kind: CallKind::ServerStream {
                    messages: args.stream_messages,
                },
                concurrency: args.concurrency,
                payload: args.payload,
            });
        }
        let high_concurrency = (args.concurrency == MEMORY_TARGET_CONCURRENCY
            || concurrencies.contains(&MEMORY_TARGET_CONCURRENCY))
        .then(|| unary(MEMORY_TARGET_CONCURRENCY, args.payload));

        let mut notes = Vec::new();
        let meshwork = [
            ScenarioKind::Meshwork,
            ScenarioKind::MeshworkCollector,
            ScenarioKind::MeshworkUp,
        ];
        let mesh = if !args.scenarios.iter().any(|kind| meshwork.contains(kind)) || args.in_process {
            MeshMode::InProcess
        } else {
            resolve_mesh_bin(args.mesh_bin.as_deref(), &mut notes)?
        };
        if args.collector && matches!(mesh, MeshMode::InProcess) {
            notes.push("--collector: the sidecars run in-process, so their spans are not sent to it".into());
        }
        let proxy_workers = match args.proxy_workers {
            Some(0) => bail!("--proxy-workers must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Plan {
            scenarios: args.scenarios.clone(),
            steps,
            duration,
            warmup,
            connections: args.connections,
            mesh,
            nginx_bin: find_binary(args.nginx_bin.as_deref(), "nginx"),
            nghttpx_bin: find_binary(args.nghttpx_bin.as_deref(), "nghttpx"),
            proxy_workers,
            deadline: args.deadline,
            collector: args.collector,
            paired: args.paired,
            headline,
            fixed_rate,
            high_concurrency,
            notes,
        })
    }
}

/// `--mesh-bin`, else the sidecar binary `mesh-proxy` next to this program
/// (what `mesh up` runs), else in-process sidecars.
fn resolve_mesh_bin(given: Option<&std::path::Path>, notes: &mut Vec<String>) -> Result<MeshMode> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let path = match given {
        Some(path) if path.is_file() => path.to_path_buf(),
        Some(path) => bail!("--mesh-bin {}: no such file", path.display()),
        None => {
            let beside = exe.with_file_name("mesh-proxy");
            if !beside.is_file() {
                notes.push(format!(
                    "no `mesh-proxy` binary next to {}: the Meshwork sidecars run in-process, so their CPU and memory \
                     are not measured (build it with `cargo build --release -p mesh`, or pass --mesh-bin)",
                    exe.display()
                ));
                return Ok(MeshMode::InProcess);
            }
            beside
        }
    };
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(mesh), Some(this)) = (modified(&path), modified(&exe))
        && mesh + Duration::from_secs(60) < this
    {
        notes.push(format!(
            "{} was built before this program: if the proxy changed since, rebuild both with \
             `cargo build --release -p mesh -p meshwork-bench`",
            path.display()
        ));
    }
    Ok(MeshMode::Process(path))
}

/// An explicit path, else `name` on PATH or in the sbin folders (where
/// Debian puts nginx and nghttpx, often not on a user's PATH).
fn find_binary(given: Option<&std::path::Path>, name: &str) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn plan(argv: &[&str]) -> Plan {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).expect("args");
        Plan::from_args(&cli.args).expect("plan")
    }

    #[test]
    fn default_steps_cover_the_issue() {
        let plan = plan(&["--in-process"]);
        let labels: Vec<String> = plan.steps.iter().map(Step::label).collect();
        assert_eq!(
            labels,
            [
                "idle",
                "idle conns ×100",
                "open streams ×1000",
                "unary 100 B ×32",
                "unary 100 B @1000/s",
                "unary 100 B ×1",
                "unary 100 B ×256",
                "unary 100 B ×1024",
                "unary 16 KiB ×32",
                "unary 1 MiB ×32",
                "server-stream 100×100 B ×32",
            ]
        );
        assert!(plan.high_concurrency.is_some());
        assert_eq!(plan.duration, Duration::from_secs(10));
    }

    #[test]
    fn quick_shortens_everything() {
        let plan = plan(&["--quick", "--in-process", "--scenarios", "direct,meshwork"]);
        assert_eq!(plan.duration, Duration::from_millis(500));
        assert_eq!(plan.scenarios, [ScenarioKind::Direct, ScenarioKind::Meshwork]);
        assert!(plan.steps.contains(&Step::IdleStreams(200)));
    }
}
