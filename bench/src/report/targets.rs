//! The targets of issue 4, judged on this run's own figures: Meshwork
//! against direct and against whichever peer proxies ran.

use std::time::Duration;

use super::{Report, StepResult};
use crate::{
    args::ScenarioKind,
    plan::{Plan, Step},
};

#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    pub name: String,
    pub goal: String,
    pub measured: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Miss,
    NotMeasured(String),
}

const PEERS: [ScenarioKind; 2] = [ScenarioKind::Nginx, ScenarioKind::Nghttpx];
const MIB: u64 = 1024 * 1024;

pub fn check_targets(report: &Report, plan: &Plan) -> Vec<TargetCheck> {
    if report.scenario(ScenarioKind::Meshwork).is_none() {
        return Vec::new();
    }
    let at = |kind: ScenarioKind, step: &Step| report.scenario(kind).and_then(|s| s.step(step));
    let mesh = |step: &Step| at(ScenarioKind::Meshwork, step);
    let peers = |step: &Step| -> Vec<(ScenarioKind, &StepResult)> {
        PEERS.iter().filter_map(|&k| Some((k, at(k, step)?))).collect()
    };
    let concurrency = match plan.headline {
        Step::Closed { concurrency, .. } => concurrency,
        _ => 0,
    };
    let rate = match plan.fixed_rate {
        Step::Open { rate, .. } => rate,
        _ => 0,
    };
    vec![
        throughput(
            concurrency,
            mesh(&plan.headline),
            at(ScenarioKind::Direct, &plan.headline),
            &peers(&plan.headline),
        ),
        cpu(concurrency, mesh(&plan.headline), &peers(&plan.headline)),
        added_latency(
            rate,
            "p50",
            Duration::from_micros(150),
            mesh(&plan.fixed_rate),
            at(ScenarioKind::Direct, &plan.fixed_rate),
            |l| l.p50,
        ),
        added_latency(
            rate,
            "p99",
            Duration::from_millis(1),
            mesh(&plan.fixed_rate),
            at(ScenarioKind::Direct, &plan.fixed_rate),
            |l| l.p99,
        ),
        memory("Sidecar memory, idle", "each < 10 MiB RSS", 10 * MIB, mesh(&Step::Idle)),
        memory(
            "Sidecar memory at 1,024 concurrent streams",
            "each < 20 MiB peak RSS",
            20 * MIB,
            plan.high_concurrency.as_ref().and_then(mesh),
        ),
    ]
}

fn not_measured(name: String, goal: &str, why: &str) -> TargetCheck {
    TargetCheck {
        name,
        goal: goal.into(),
        measured: "–".into(),
        verdict: Verdict::NotMeasured(why.into()),
    }
}

fn clean(result: &StepResult) -> bool {
    result.failure.is_none()
        && result
            .load
            .as_ref()
            .is_some_and(|l| l.error_count() == 0 && l.calls > 0)
}

fn throughput(
    concurrency: usize,
    mesh: Option<&StepResult>,
    direct: Option<&StepResult>,
    peers: &[(ScenarioKind, &StepResult)],
) -> TargetCheck {
    let name = format!("Throughput, {concurrency} concurrent unary calls");
    let goal = "≥ 45 % of direct, above nginx and nghttpx";
    let rate = |r: &StepResult| r.load.as_ref().map_or(0.0, |l| l.rate());
    let (Some(mesh), Some(direct)) = (mesh, direct) else {
        return not_measured(name, goal, "needs direct and meshwork");
    };
    if rate(direct) <= 0.0 {
        return not_measured(name, goal, "direct carried no calls");
    }
    let share = |r: &StepResult| 100.0 * rate(r) / rate(direct);
    let mut measured = format!("{:.0} %", share(mesh));
    let others: Vec<String> = peers.iter().map(|(k, r)| format!("{k} {:.0} %", share(r))).collect();
    if !others.is_empty() {
        measured.push_str(&format!(" ({})", others.join(", ")));
    }
    let pass = clean(mesh) && share(mesh) >= 45.0 && peers.iter().all(|(_, r)| rate(mesh) > rate(r));
    TargetCheck {
        name,
        goal: goal.into(),
        measured,
        verdict: if pass { Verdict::Pass } else { Verdict::Miss },
    }
}

fn cpu(concurrency: usize, mesh: Option<&StepResult>, peers: &[(ScenarioKind, &StepResult)]) -> TargetCheck {
    let name = format!("CPU of both proxies per unary call, {concurrency} concurrent");
    let goal = "≤ 40 µs, below nginx and nghttpx";
    let Some(mesh_cpu) = mesh.and_then(StepResult::cpu_per_call) else {
        return not_measured(name, goal, "sidecars not run as processes");
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let peer_cpu: Vec<(ScenarioKind, Duration)> = peers
        .iter()
        .filter_map(|(k, r)| Some((*k, r.cpu_per_call()?)))
        .collect();
    let mut measured = format!("{:.1} µs", us(mesh_cpu));
    if !peer_cpu.is_empty() {
        let others: Vec<String> = peer_cpu.iter().map(|(k, d)| format!("{k} {:.1}", us(*d))).collect();
        measured.push_str(&format!(" ({})", others.join(", ")));
    }
    let pass = mesh.is_some_and(clean) && us(mesh_cpu) <= 40.0 && peer_cpu.iter().all(|(_, d)| mesh_cpu < *d);
    TargetCheck {
        name,
        goal: goal.into(),
        measured,
        verdict: if pass { Verdict::Pass } else { Verdict::Miss },
    }
}

fn added_latency(
    rate: u32,
    which: &str,
    limit: Duration,
    mesh: Option<&StepResult>,
    direct: Option<&StepResult>,
    pick: fn(&crate::load::Latency) -> Duration,
) -> TargetCheck {
    let name = format!("Added {which} latency at {rate} calls/s");
    let goal = format!("≤ {:.2} ms over direct", limit.as_secs_f64() * 1000.0);
    let Some(mesh) = mesh else {
        return not_measured(name, &goal, "needs meshwork");
    };
    // Paired direct calls met the same moments of the machine; else the direct scenario's step.
    let paired = mesh.paired_direct.as_ref();
    let (Some(m), Some(d)) = (&mesh.load, paired.or(direct.and_then(|d| d.load.as_ref()))) else {
        return not_measured(name, &goal, "needs direct and meshwork");
    };
    let added = pick(&m.latency).as_secs_f64() - pick(&d.latency).as_secs_f64();
    let mut measured = format!("{:+.3} ms", added * 1000.0);
    if paired.is_some() {
        measured.push_str(" over the direct calls paired with it");
    } else if let Some((on_mesh, on_direct)) = mesh.stolen.zip(direct.and_then(|d| d.stolen))
        && !(on_mesh + on_direct).is_zero()
    {
        // A tail is judged with what the host took from the machine meanwhile.
        measured.push_str(&format!(
            " (host stole {} ms of CPU during meshwork's step, {} ms during direct's)",
            super::stolen_ms(on_mesh),
            super::stolen_ms(on_direct)
        ));
    }
    TargetCheck {
        name,
        goal,
        measured,
        verdict: if clean(mesh) && added <= limit.as_secs_f64() {
            Verdict::Pass
        } else {
            Verdict::Miss
        },
    }
}

fn memory(name: &str, goal: &str, limit: u64, mesh: Option<&StepResult>) -> TargetCheck {
    let Some(mesh) = mesh else {
        return not_measured(name.into(), goal, "step not run");
    };
    let values: Option<Vec<(&str, u64)>> = mesh.proxies.iter().map(|p| Some((p.role, p.memory?))).collect();
    let Some(values) = values.filter(|v| !v.is_empty()) else {
        return not_measured(name.into(), goal, "sidecars not run as processes");
    };
    let measured: Vec<String> = values
        .iter()
        .map(|(role, v)| format!("{role} {:.1} MiB", *v as f64 / MIB as f64))
        .collect();
    TargetCheck {
        name: name.into(),
        goal: goal.into(),
        measured: measured.join(", "),
        verdict: if values.iter().all(|(_, v)| *v < limit) {
            Verdict::Pass
        } else {
            Verdict::Miss
        },
    }
}
