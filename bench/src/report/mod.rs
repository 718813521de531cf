//! What a run found: per scenario, per step, the load figures and each
//! proxy's CPU and memory; the targets' verdicts; and the Markdown it prints.

mod table;
mod targets;

use std::time::Duration;

pub use table::{bytes, errors as errors_of, ms, stolen_ms, targets_markdown};
pub use targets::{TargetCheck, Verdict, check_targets};

use crate::{args::ScenarioKind, load::LoadResult, machine::Machine, plan::Step};

/// One proxy's figures over one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUsage {
    pub role: &'static str,
    /// CPU time (user + system) over the measured part of the step.
    pub cpu: Option<Duration>,
    /// Bytes. Load steps: peak RSS during the step. `idle`: RSS. Idle
    /// connections and open streams: RSS added per connection or stream.
    pub memory: Option<u64>,
}

/// One step of one scenario.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub step: Step,
    /// Load steps only.
    pub load: Option<LoadResult>,
    /// One entry per proxy, outbound first; empty for `direct`.
    pub proxies: Vec<ProxyUsage>,
    /// Why the step could not be measured.
    pub failure: Option<String>,
    /// Load steps: CPU time the hypervisor took from the machine during the
    /// measured part ([`crate::procstat::stolen`]), where the kernel tells.
    pub stolen: Option<Duration>,
    /// Open loop with `--paired`: the direct calls that took turns with
    /// this step's, which its added latency is measured against.
    pub paired_direct: Option<LoadResult>,
}

impl StepResult {
    pub fn load(step: Step, load: LoadResult, proxies: Vec<ProxyUsage>, stolen: Option<Duration>) -> StepResult {
        StepResult {
            step,
            load: Some(load),
            proxies,
            failure: None,
            stolen,
            paired_direct: None,
        }
    }

    pub fn memory(step: Step, proxies: Vec<ProxyUsage>) -> StepResult {
        StepResult {
            step,
            load: None,
            proxies,
            failure: None,
            stolen: None,
            paired_direct: None,
        }
    }

    pub fn failed(step: Step, error: anyhow::Error) -> StepResult {
        StepResult {
            step,
            load: None,
            proxies: Vec::new(),
            failure: Some(format!("{error:#}")),
            stolen: None,
            paired_direct: None,
        }
    }

    /// CPU of all the proxies per successful call, when every proxy was measured.
    pub fn cpu_per_call(&self) -> Option<Duration> {
        let calls = self.load.as_ref()?.calls;
        if calls == 0 || self.proxies.is_empty() {
            return None;
        }
        let total: Option<Duration> = self.proxies.iter().map(|p| p.cpu).sum();
        Some(total? / u32::try_from(calls).unwrap_or(u32::MAX))
    }

    /// One line for the progress output.
    pub fn summary(&self) -> String {
        if let Some(failure) = &self.failure {
            return format!("FAILED: {failure}");
        }
        let mut parts = Vec::new();
        if let Some(load) = &self.load {
            parts.push(format!(
                "{:.0} calls/s, p50 {}, p99 {}",
                load.rate(),
                table::ms(load.latency.p50),
                table::ms(load.latency.p99)
            ));
            if load.error_count() > 0 {
                parts.push(format!("errors {}", table::errors(load)));
                for (code, message) in &load.error_examples {
                    parts.push(format!("{code}: {message:?}"));
                }
            }
        }
        if let Some(cpu) = self.cpu_per_call() {
            parts.push(format!("{:.1} µs CPU/call", cpu.as_secs_f64() * 1e6));
        }
        if let Some(stolen) = self.stolen.filter(|s| !s.is_zero()) {
            parts.push(format!("host stole {} ms", table::stolen_ms(stolen)));
        }
        let memory: Vec<String> = self
            .proxies
            .iter()
            .filter_map(|p| Some(format!("{} {}", p.role, table::bytes(p.memory?))))
            .collect();
        if !memory.is_empty() {
            parts.push(memory.join(", "));
        }
        parts.join("; ")
    }
}

/// One scenario's steps.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub kind: ScenarioKind,
    /// How its proxies ran.
    pub mode: String,
    pub steps: Vec<StepResult>,
}

impl ScenarioReport {
    pub fn step(&self, step: &Step) -> Option<&StepResult> {
        self.steps.iter().find(|s| &s.step == step)
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub machine: Machine,
    /// Durations, connections, workers: how the run was made.
    pub settings: String,
    pub notes: Vec<String>,
    pub steps: Vec<Step>,
    pub scenarios: Vec<ScenarioReport>,
    pub skipped: Vec<(ScenarioKind, String)>,
    pub targets: Vec<TargetCheck>,
    /// With `--collector`: the spans the sidecars sent it.
    pub spans_collected: Option<u64>,
}

impl Report {
    pub fn scenario(&self, kind: ScenarioKind) -> Option<&ScenarioReport> {
        self.scenarios.iter().find(|s| s.kind == kind)
    }

    /// The report as Markdown: machine, settings, the table, the targets.
    pub fn markdown(&self) -> String {
        table::markdown(self)
    }
}
