//! The report as Markdown: one table with every step of every scenario,
//! grouped by step so the scenarios sit side by side, then the targets.

use std::{fmt::Write, time::Duration};

use super::{Report, ScenarioReport, StepResult, TargetCheck, Verdict};
use crate::{args::ScenarioKind, load::LoadResult, plan::Step};

pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {}  ", report.machine);
    let _ = writeln!(out, "Run: {}  ", report.settings);
    for (kind, mode) in report.scenarios.iter().map(|s| (s.kind, &s.mode)) {
        let _ = writeln!(out, "`{kind}`: {mode}  ");
    }
    for (kind, reason) in &report.skipped {
        let _ = writeln!(out, "`{kind}`: skipped, {reason}  ");
    }
    for note in &report.notes {
        let _ = writeln!(out, "Note: {note}  ");
    }
    out.push('\n');
    out.push_str(
        "| step | scenario | calls/s | vs direct | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors \
         | host stole ms | proxy CPU µs/call (out + in [+ launcher]) | proxy memory (out / in [/ launcher]) |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|\n");
    let direct = report.scenario(ScenarioKind::Direct);
    for step in &report.steps {
        for scenario in &report.scenarios {
            // Without proxies a memory step has nothing to show.
            let empty = !step.is_load() && scenario.kind == ScenarioKind::Direct;
            if let Some(result) = scenario.step(step).filter(|_| !empty) {
                out.push_str(&row(scenario, result, direct.and_then(|d| d.step(step))));
            }
        }
    }
    if !report.targets.is_empty() {
        out.push_str("\nTargets (issue 4), Meshwork against the other scenarios of this run:\n\n");
        out.push_str(&targets_markdown(&report.targets));
    }
    out
}

/// The targets' table, one row each with its verdict.
pub fn targets_markdown(targets: &[TargetCheck]) -> String {
    let mut out = String::from("| target | goal | measured | verdict |\n|---|---|---|---|\n");
    for t in targets {
        let verdict = match &t.verdict {
            Verdict::Pass => "PASS".to_string(),
            Verdict::Miss => "**MISS**".to_string(),
            Verdict::NotMeasured(why) => format!("n/a ({why})"),
        };
        let _ = writeln!(out, "| {} | {} | {} | {verdict} |", t.name, t.goal, t.measured);
    }
    out
}

fn row(scenario: &ScenarioReport, result: &StepResult, direct: Option<&StepResult>) -> String {
    let dash = || "–".to_string();
    let mut cells = vec![result.step.label(), scenario.kind.to_string()];
    match (&result.load, &result.failure) {
        (_, Some(failure)) => {
            cells.extend(std::iter::repeat_n(dash(), 7));
            cells.push(format!("failed: {}", failure.replace('|', "/").replace('\n', " ")));
        }
        (Some(load), None) => {
            let l = load.latency;
            cells.push(format!("{:.0}", load.rate()));
            cells.push(versus(
                result.step,
                load,
                result.paired_direct.as_ref().or(direct.and_then(|d| d.load.as_ref())),
                scenario.kind,
            ));
            cells.extend([l.p50, l.p90, l.p99, l.p999, l.max].map(ms));
            cells.push(errors(load));
        }
        (None, None) => {
            cells.extend(std::iter::repeat_n(dash(), 7));
            cells.push("0".into());
        }
    }
    cells.push(result.stolen.map_or_else(dash, stolen_ms));
    cells.push(cpu(result));
    cells.push(memory(result));
    format!("| {} |\n", cells.join(" | "))
}

/// Throughput as a share of direct (closed loop), or latency added over
/// direct at p50 / p99 (open loop; over its paired direct calls, if any).
fn versus(step: Step, load: &LoadResult, direct: Option<&LoadResult>, kind: ScenarioKind) -> String {
    let Some(direct) = direct.filter(|_| kind != ScenarioKind::Direct) else {
        return "–".into();
    };
    match step {
        Step::Open { .. } => format!(
            "{} / {} ms",
            signed_ms(load.latency.p50, direct.latency.p50),
            signed_ms(load.latency.p99, direct.latency.p99)
        ),
        _ if direct.rate() > 0.0 => format!("{:.0} %", 100.0 * load.rate() / direct.rate()),
        _ => "–".into(),
    }
}

fn cpu(result: &StepResult) -> String {
    let Some(calls) = result.load.as_ref().map(|l| l.calls).filter(|&c| c > 0) else {
        return "–".into();
    };
    if result.proxies.is_empty() {
        return "–".into();
    }
    let per_call = |d: Duration| d.as_secs_f64() * 1e6 / calls as f64;
    let parts: Option<Vec<f64>> = result.proxies.iter().map(|p| p.cpu.map(per_call)).collect();
    match parts {
        Some(parts) => {
            let total: f64 = parts.iter().sum();
            let each: Vec<String> = parts.iter().map(|p| format!("{p:.1}")).collect();
            format!("{} = {total:.1}", each.join(" + "))
        }
        None => "n/a".into(),
    }
}

fn memory(result: &StepResult) -> String {
    if result.proxies.is_empty() {
        return "–".into();
    }
    let values: Option<Vec<u64>> = result.proxies.iter().map(|p| p.memory).collect();
    let Some(values) = values else {
        return "n/a".into();
    };
    let each = |f: fn(u64) -> String| values.iter().map(|&v| f(v)).collect::<Vec<_>>().join(" / ");
    match result.step {
        Step::Idle => format!("{} RSS", each(mib)),
        Step::IdleConnections(_) => format!("+{} per conn", each(kib)),
        Step::IdleStreams(_) => format!("+{} per stream", each(kib)),
        Step::Closed { .. } | Step::Open { .. } => format!("peak {}", each(mib)),
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// CPU time the host stole: counted in 10 ms ticks, so whole milliseconds.
pub fn stolen_ms(d: Duration) -> String {
    d.as_millis().to_string()
}

fn signed_ms(value: Duration, base: Duration) -> String {
    format!("{:+.3}", (value.as_secs_f64() - base.as_secs_f64()) * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

pub fn bytes(bytes: u64) -> String {
    if bytes >= 1024 * 1024 { mib(bytes) } else { kib(bytes) }
}

pub fn errors(load: &LoadResult) -> String {
    if load.errors.is_empty() {
        return "0".into();
    }
    load.errors
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
