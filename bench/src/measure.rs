//! Running the plan's steps against one scenario: warm up, read the proxies'
//! /proc figures, apply the load (or open idle connections and streams), read
//! them again.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};

use crate::{
    load::{self, Client, LoadResult},
    plan::{CallKind, Plan, Step},
    procstat::{self, ProcSample},
    report::{ProxyUsage, StepResult},
    scenario::Target,
};

/// Streams per connection in the open-streams step, under every proxy's
/// per-connection limit (1,024 here, 128 in nginx's defaults).
const STREAMS_PER_CONNECTION: usize = 500;
/// How long each path's turn lasts in a paired open loop: 20 calls at
/// 1,000 calls/s, short beside the host's bursts of stolen time.
pub(crate) const PAIRED_SLICE: Duration = Duration::from_millis(20);

/// Runs every step of `plan` against `target`, printing progress to stderr.
/// With `paired_direct` (the echo server's address), the open-loop step takes
/// turns with direct calls to it.
pub async fn run_steps(target: &Target, plan: &Plan, paired_direct: Option<SocketAddr>) -> Result<Vec<StepResult>> {
    let clients = load::connect_many(target.addr, plan.connections).await?;
    let direct_clients = match paired_direct {
        Some(addr) => Some(load::connect_many(addr, plan.connections).await?),
        None => None,
    };
    for client in &clients {
        client
            .clone()
            .unary(load::request(CallKind::Unary, 16))
            .await
            .context("first call through the scenario")?;
    }
    let mut results = Vec::new();
    for step in &plan.steps {
        let result = run_step(*step, target, &clients, direct_clients.as_deref(), plan).await;
        eprintln!("  {:<28} {}", step.label(), result.summary());
        results.push(result);
    }
    Ok(results)
}

async fn run_step(
    step: Step,
    target: &Target,
    clients: &[Client],
    direct_clients: Option<&[Client]>,
    plan: &Plan,
) -> StepResult {
    match step {
        Step::Idle => {
            let now = samples(target);
            StepResult::memory(step, usage(target, &now, &now, |_, after| Some(after.rss)))
        }
        Step::Closed {
            kind,
            concurrency,
            payload,
        } => {
            let calls = load::echo_calls(clients, kind, payload, plan.deadline);
            if !plan.warmup.is_zero() {
                load::closed_loop(&calls, concurrency, plan.warmup).await;
            }
            measured_load(step, target, load::closed_loop(&calls, concurrency, plan.duration)).await
        }
        Step::Open { rate, payload } => {
            let calls = load::echo_calls(clients, CallKind::Unary, payload, plan.deadline);
            if let Some(direct_clients) = direct_clients {
                let direct = load::echo_calls(direct_clients, CallKind::Unary, payload, plan.deadline);
                return paired_open_loop(step, target, &calls, &direct, rate, plan).await;
            }
            if !plan.warmup.is_zero() {
                load::open_loop(&calls, rate, plan.warmup).await;
            }
            measured_load(step, target, load::open_loop(&calls, rate, plan.duration)).await
        }
        Step::IdleConnections(n) => {
            let before = samples(target);
            match load::hold_connections(target.addr, n).await {
                Ok(held) => {
                    let after = samples(target);
                    drop(held);
                    StepResult::memory(step, usage(target, &before, &after, per_item(n)))
                }
                Err(error) => StepResult::failed(step, error),
            }
        }
        Step::IdleStreams(n) => match idle_streams(target, n).await {
            Ok((before, after)) => StepResult::memory(step, usage(target, &before, &after, per_item(n))),
            Err(error) => StepResult::failed(step, error),
        },
    }
}

/// Runs the measured part of a load step, with the proxies' CPU and peak
/// memory and the machine's stolen time read around it.
async fn measured_load(step: Step, target: &Target, load: impl Future<Output = LoadResult>) -> StepResult {
    let before = start_sampling(target);
    let stolen_before = procstat::stolen();
    let result = load.await;
    let stolen = stolen_before
        .zip(procstat::stolen())
        .map(|(before, after)| after.saturating_sub(before));
    let after = samples(target);
    let proxies = usage(target, &before, &after, |_, a| Some(a.peak_rss));
    StepResult::load(step, result, proxies, stolen)
}

/// The open loop taking turns between the scenario's path and direct calls;
/// the direct ones are kept beside the step's own figures.
async fn paired_open_loop<C: load::Caller>(
    step: Step,
    target: &Target,
    calls: &[C],
    direct: &[C],
    rate: u32,
    plan: &Plan,
) -> StepResult {
    if !plan.warmup.is_zero() {
        load::open_loop_paired(calls, direct, rate, plan.warmup, PAIRED_SLICE).await;
    }
    let mut paired_direct = None;
    let path = async {
        let [path, direct] = load::open_loop_paired(calls, direct, rate, plan.duration, PAIRED_SLICE).await;
        paired_direct = Some(direct);
        path
    };
    let mut result = measured_load(step, target, path).await;
    result.paired_direct = paired_direct;
    result
}

/// Opens the connections first, so the reading covers the streams alone.
async fn idle_streams(target: &Target, n: usize) -> Result<(Vec<Option<ProcSample>>, Vec<Option<ProcSample>>)> {
    let clients = load::hold_connections(target.addr, n.div_ceil(STREAMS_PER_CONNECTION)).await?;
    let before = samples(target);
    let held = load::hold_streams(&clients, n).await?;
    let after = samples(target);
    anyhow::ensure!(held.count() == n, "{} of {n} streams open", held.count());
    Ok((before, after))
}

/// Resident memory added per connection or stream, bytes.
fn per_item(n: usize) -> impl Fn(&ProcSample, &ProcSample) -> Option<u64> {
    move |before, after| Some(after.rss.saturating_sub(before.rss) / n.max(1) as u64)
}

/// Resets the peak-RSS marks, then reads every proxy.
fn start_sampling(target: &Target) -> Vec<Option<ProcSample>> {
    for pid in target.proxies.iter().filter_map(|p| p.pid) {
        procstat::reset_peak(pid);
    }
    samples(target)
}

/// One reading per proxy (None in-process or if it cannot be read).
fn samples(target: &Target) -> Vec<Option<ProcSample>> {
    target
        .proxies
        .iter()
        .map(|p| p.pid.and_then(|pid| procstat::sample(pid, p.scope).ok()))
        .collect()
}

fn usage(
    target: &Target,
    before: &[Option<ProcSample>],
    after: &[Option<ProcSample>],
    memory: impl Fn(&ProcSample, &ProcSample) -> Option<u64>,
) -> Vec<ProxyUsage> {
    target
        .proxies
        .iter()
        .zip(before.iter().zip(after))
        .map(|(proxy, pair)| match pair {
            (Some(b), Some(a)) => ProxyUsage {
                role: proxy.role,
                cpu: Some(a.cpu.saturating_sub(b.cpu)),
                memory: memory(b, a),
            },
            _ => ProxyUsage {
                role: proxy.role,
                cpu: None,
                memory: None,
            },
        })
        .collect()
}
