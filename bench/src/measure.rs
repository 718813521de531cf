//! Running the plan's steps against one scenario: warm up, read the proxies'
//! /proc figures, apply the load (or open idle connections and streams), read
//! them again.

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

/// Runs every step of `plan` against `target`, printing progress to stderr.
pub async fn run_steps(target: &Target, plan: &Plan) -> Result<Vec<StepResult>> {
    let clients = load::connect_many(target.addr, plan.connections).await?;
    for client in &clients {
        client
            .clone()
            .unary(load::request(CallKind::Unary, 16))
            .await
            .context("first call through the scenario")?;
    }
    let mut results = Vec::new();
    for step in &plan.steps {
        let result = run_step(*step, target, &clients, plan).await;
        eprintln!("  {:<28} {}", step.label(), result.summary());
        results.push(result);
    }
    Ok(results)
}

async fn run_step(step: Step, target: &Target, clients: &[Client], plan: &Plan) -> StepResult {
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
