//! meshwork-bench: what a pair of Meshwork sidecars costs a gRPC call, side
//! by side with no proxy, a pair of nginx and a pair of nghttpx, in one run
//! on one machine.
//!
//! [`run`] starts an echo server, then for each scenario starts its proxies
//! (`scenario`), drives the same steps through them (`measure`, `load`),
//! reads the proxies' CPU and memory from /proc (`procstat`), and returns a
//! [`Report`] with one Markdown table and the verdicts on the issue's
//! targets (`report`). `BENCHMARKS.md` explains how to read it.

mod args;
mod background;
mod collector;
mod echo;
pub mod edge;
mod load;
mod machine;
mod measure;
mod plan;
mod procstat;
mod report;
mod scenario;
mod soak;

use anyhow::{Context, Result, bail};

pub use args::{BenchArgs, ScenarioKind, parse_size};
pub use load::{Latency, LoadResult};
pub use machine::Machine;
pub use plan::{CallKind, Step};
pub use report::{ProxyUsage, Report, ScenarioReport, StepResult, TargetCheck, Verdict};
pub use soak::{SidecarSample, SoakPlan, SoakReport, SoakRow};

use crate::{
    collector::Collector,
    echo::EchoServer,
    plan::{MeshMode, Plan},
    scenario::Setup,
};

/// Runs the benchmark `args` describe, printing progress to stderr. Every
/// process and temp dir it makes is gone when it returns, also on error, on
/// Ctrl-C or SIGTERM (which end it with an error), and when its future is
/// dropped. With `--output`, the Markdown is also written there.
pub async fn run(args: BenchArgs) -> Result<Report> {
    let plan = Plan::from_args(&args)?;
    let report = tokio::select! {
        report = run_plan(&plan) => report?,
        signal = interrupted() => bail!("interrupted by {signal}: stopped every proxy it had started"),
    };
    if let Some(path) = &args.output {
        std::fs::write(path, report.markdown()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// Runs the edge benchmark (`--edge`: the gateway against grpc-gateway and
/// nginx, see [`edge`]), with the same guarantees as [`run`].
pub async fn run_edge(args: BenchArgs) -> Result<edge::EdgeReport> {
    let plan = edge_plan(&args)?;
    let report = tokio::select! {
        report = edge::run(&plan) => report?,
        signal = interrupted() => bail!("interrupted by {signal}: stopped every edge it had started"),
    };
    if let Some(path) = &args.output {
        std::fs::write(path, report.markdown()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// The edge benchmark's settings: `--duration` (or `--quick`), `--warmup`,
/// `--concurrency`, `--rate`, and the `mesh` binary beside the sidecar's.
fn edge_plan(args: &BenchArgs) -> Result<edge::EdgePlan> {
    let plan = Plan::from_args(args)?;
    let mesh = match &plan.mesh {
        MeshMode::Process(sidecar) => sidecar.with_file_name("mesh"),
        MeshMode::InProcess => bail!("--edge runs `mesh up`, so it needs the `mesh` binary, not --in-process"),
    };
    if !mesh.is_file() {
        bail!("--edge runs `mesh up`: no `mesh` binary at {}", mesh.display());
    }
    Ok(edge::EdgePlan {
        duration: plan.duration,
        warmup: plan.warmup,
        concurrency: args.concurrency,
        rate: args.rate,
        mesh,
        nginx: plan.nginx_bin,
        nginx_workers: plan.proxy_workers,
    })
}

/// Runs the soak `args.soak` asks for (see [`soak`]), with the same
/// guarantees as [`run`]: everything it started is stopped when it returns.
pub async fn run_soak(args: BenchArgs) -> Result<SoakReport> {
    let duration = args.soak.context("run_soak needs --soak")?;
    let plan = Plan::from_args(&args)?;
    let soak = SoakPlan::from_args(&args, duration)?;
    let report = tokio::select! {
        report = soak::run(&plan, soak) => report?,
        signal = interrupted() => bail!("interrupted by {signal}: stopped the soak's mesh"),
    };
    if let Some(path) = &args.output {
        std::fs::write(path, report.markdown()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

async fn run_plan(plan: &Plan) -> Result<Report> {
    for note in &plan.notes {
        eprintln!("note: {note}");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let echo = EchoServer::start(cpus)?;
    let exporting = plan.collector || plan.scenarios.contains(&ScenarioKind::MeshworkCollector);
    let collector = match (&plan.mesh, exporting) {
        (MeshMode::Process(_), true) => Some(Collector::start()?),
        _ => None,
    };
    let mut report = Report {
        machine: Machine::detect(),
        settings: format!(
            "{} per step after {} of warm-up; the client on {} HTTP/2 connection(s), calls multiplexed as \
             streams; echo server on {cpus} threads; nginx/nghttpx with {} worker(s)",
            humantime::format_duration(plan.duration),
            humantime::format_duration(plan.warmup),
            plan.connections,
            plan.proxy_workers,
        ) + &plan
            .deadline
            .map(|d| format!("; every call sent with a {} deadline", humantime::format_duration(d)))
            .unwrap_or_default()
            + if collector.is_some() && plan.collector {
                "; sidecars export spans to an OTLP collector in the bench"
            } else {
                ""
            }
            + &if plan.paired {
                format!(
                    "; the open-loop step takes turns every {} with direct calls, and its added latency is over those",
                    humantime::format_duration(measure::PAIRED_SLICE)
                )
            } else {
                String::new()
            },
        notes: plan.notes.clone(),
        steps: plan.steps.clone(),
        scenarios: Vec::new(),
        skipped: Vec::new(),
        targets: Vec::new(),
        spans_collected: None,
    };
    let endpoint = collector.as_ref().map(Collector::endpoint);
    for &kind in &plan.scenarios {
        let spans_to = match kind {
            ScenarioKind::MeshworkCollector => endpoint.as_deref(),
            ScenarioKind::Meshwork if plan.collector => endpoint.as_deref(),
            _ => None,
        };
        let spans_before = collector.as_ref().map_or(0, Collector::spans);
        let setup = scenario::start(kind, plan, echo.addr, spans_to)
            .await
            .with_context(|| format!("starting the {kind} scenario"))?;
        match setup {
            Setup::Skipped(reason) => {
                eprintln!("{kind}: skipped: {reason}");
                report.skipped.push((kind, reason));
            }
            Setup::Ready(target) => {
                eprintln!("{kind}: {}", target.mode);
                let paired_direct = (plan.paired && kind != ScenarioKind::Direct).then_some(echo.addr);
                let steps = measure::run_steps(&target, plan, paired_direct)
                    .await
                    .with_context(|| format!("measuring the {kind} scenario"))?;
                let mode = match &collector {
                    Some(collector) if spans_to.is_some() => format!(
                        "{}; {} spans received by the collector",
                        target.mode,
                        collector.spans() - spans_before
                    ),
                    _ => target.mode.clone(),
                };
                report.scenarios.push(report::ScenarioReport { kind, mode, steps });
                // Stops its processes before the next scenario starts.
                drop(target);
            }
        }
    }
    report.targets = report::check_targets(&report, plan);
    report.spans_collected = collector.as_ref().map(Collector::spans);
    Ok(report)
}

/// Resolves with the signal's name on Ctrl-C or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminate = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = tokio::signal::ctrl_c() => match result {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        },
        () = terminate => "SIGTERM",
    }
}
