//! The edge benchmark's report: one row per case, the targets
//! judged from the rows, and the Markdown of both.

use std::{fmt::Write, time::Duration};

use crate::{
    load::LoadResult,
    machine::Machine,
    report::{self, TargetCheck, Verdict},
};

/// Who stands between the load generator and the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Nothing: the backend itself (the floor).
    Backend,
    /// The Meshwork gateway, its sidecar and the shop's sidecar.
    Meshwork,
    /// grpc-gateway, in front of the same two sidecars.
    GrpcGateway,
    /// nginx, in front of the backend's JSON port.
    Nginx,
}

impl Edge {
    pub fn name(self) -> &'static str {
        match self {
            Edge::Backend => "backend",
            Edge::Meshwork => "meshwork",
            Edge::GrpcGateway => "grpc-gateway",
            Edge::Nginx => "nginx",
        }
    }
}

/// What a case calls, and under which policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    GrpcGet,
    RestGet,
    RestPost,
    RestMiss,
    RestHit,
    GrpcHit,
    RestHitMemoryLimit,
    RestHitRedisLimit,
    RestHitLimitReq,
}

impl Call {
    pub fn label(self) -> &'static str {
        match self {
            Call::GrpcGet => "gRPC GetProduct",
            Call::RestGet => "REST GET product",
            Call::RestPost => "REST POST /v1/users (JSON body)",
            Call::RestMiss => "REST GET, cache miss (no-cache)",
            Call::RestHit => "REST GET, cache hit",
            Call::GrpcHit => "gRPC GetProduct, cache hit",
            Call::RestHitMemoryLimit => "REST GET, hit + rate limit in memory",
            Call::RestHitRedisLimit => "REST GET, hit + rate limit in Redis",
            Call::RestHitLimitReq => "REST GET, hit + limit_req",
        }
    }
}

/// One measured process during one loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub role: &'static str,
    pub cpu_per_call: Option<Duration>,
    pub peak_rss: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub edge: Edge,
    pub call: Call,
    /// The closed loop at `--concurrency`.
    pub closed: LoadResult,
    /// The open loop at `--rate`.
    pub open: LoadResult,
    /// The edge's processes during each loop; the first is the edge itself.
    pub closed_usage: Vec<Usage>,
    pub open_usage: Vec<Usage>,
}

#[derive(Debug, Clone)]
pub struct EdgeReport {
    pub machine: Machine,
    pub settings: String,
    pub rows: Vec<Row>,
    pub skipped: Vec<(Edge, String)>,
    pub targets: Vec<TargetCheck>,
}

impl Row {
    /// The first measured process: the edge itself (gateway, grpc-gateway, nginx).
    fn edge_cpu(usage: &[Usage]) -> Option<Duration> {
        usage.first().and_then(|u| u.cpu_per_call)
    }

    /// Every other process on the path (sidecars, Redis).
    fn path_cpu(usage: &[Usage]) -> Option<Duration> {
        usage.iter().skip(1).map(|u| u.cpu_per_call).sum()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} {}: {:.0} calls/s ×C, p50 {} ms @rate, edge CPU {} µs/call, errors {}",
            self.edge.name(),
            self.call.label(),
            self.closed.rate(),
            report::ms(self.open.latency.p50),
            micros(Row::edge_cpu(&self.closed_usage)),
            report::errors_of(&self.closed)
        )
    }
}

impl EdgeReport {
    pub fn row(&self, edge: Edge, call: Call) -> Option<&Row> {
        self.rows.iter().find(|r| r.edge == edge && r.call == call)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Machine: {}  ", self.machine);
        let _ = writeln!(out, "Run: {}  ", self.settings);
        for (edge, reason) in &self.skipped {
            let _ = writeln!(out, "`{}`: skipped, {reason}  ", edge.name());
        }
        out.push_str(
            "\n| edge | call | calls/s ×C | p50 ms ×C | p50 ms @rate | p99 ms @rate | p99.9 ms @rate | errors \
             | edge CPU µs/call ×C | rest of path µs/call ×C | edge CPU µs/call @rate | edge peak RSS |\n",
        );
        out.push_str("|---|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|\n");
        for row in &self.rows {
            let mut errors = report::errors_of(&row.closed);
            if row.open.error_count() > 0 {
                errors = format!("{errors}; @rate {}", report::errors_of(&row.open));
            }
            let rss = row
                .closed_usage
                .first()
                .and_then(|u| u.peak_rss)
                .map_or("–".into(), report::bytes);
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {errors} | {} | {} | {} | {rss} |",
                row.edge.name(),
                row.call.label(),
                row.closed.rate(),
                report::ms(row.closed.latency.p50),
                report::ms(row.open.latency.p50),
                report::ms(row.open.latency.p99),
                report::ms(row.open.latency.p999),
                micros(Row::edge_cpu(&row.closed_usage)),
                micros(Row::path_cpu(&row.closed_usage)),
                micros(Row::edge_cpu(&row.open_usage)),
            );
        }
        if !self.targets.is_empty() {
            out.push_str("\nTargets (issue 12):\n\n");
            out.push_str(&report::targets_markdown(&self.targets));
        }
        out
    }
}

fn micros(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e6))
}

/// The targets, from the rows of this run.
pub fn check_targets(report: &EdgeReport) -> Vec<TargetCheck> {
    let row = |edge, call| report.row(edge, call);
    let ours = |call| row(Edge::Meshwork, call);
    let theirs = |call| row(Edge::GrpcGateway, call);
    let cpu = |r: &Row| Row::edge_cpu(&r.closed_usage);
    let p50 = |r: &Row| r.open.latency.p50;
    let mut targets = Vec::new();

    targets.push(compare(
        "transcoding CPU",
        "a REST GET costs the gateway no more CPU than grpc-gateway",
        ours(Call::RestGet).and_then(cpu),
        theirs(Call::RestGet).and_then(cpu),
        |ours, theirs| ours <= theirs,
        |ours, theirs| format!("{} vs {} µs/call", micros(Some(ours)), micros(Some(theirs))),
    ));
    targets.push(compare(
        "transcoding CPU, POST",
        "a REST POST with a body costs the gateway no more CPU than grpc-gateway",
        ours(Call::RestPost).and_then(cpu),
        theirs(Call::RestPost).and_then(cpu),
        |ours, theirs| ours <= theirs,
        |ours, theirs| format!("{} vs {} µs/call", micros(Some(ours)), micros(Some(theirs))),
    ));
    targets.push(compare(
        "transcoding latency",
        "a REST GET adds no more p50 than grpc-gateway (same sidecars behind both)",
        ours(Call::RestGet).map(p50),
        theirs(Call::RestGet).map(p50),
        |ours, theirs| ours <= theirs,
        |ours, theirs| format!("p50 {} vs {} ms", report::ms(ours), report::ms(theirs)),
    ));
    // What the edge adds to the load generator's own round trip (the
    // backend's JSON port answering at once): the time the edge serves in.
    let floor = row(Edge::Backend, Call::RestGet).map(p50);
    let added = |call| Some(ours(call).map(p50)?.saturating_sub(floor?));
    targets.push(compare(
        "cache hit",
        "a hit is served at least 5× faster than a miss (p50 at the fixed rate, over the REST floor)",
        added(Call::RestMiss),
        added(Call::RestHit),
        |miss, hit| miss.as_secs_f64() >= 5.0 * hit.as_secs_f64(),
        |miss, hit| {
            format!(
                "miss +{} ms, hit +{} ms over the floor's {} ms: {:.1}×",
                report::ms(miss),
                report::ms(hit),
                floor.map_or("–".into(), report::ms),
                miss.as_secs_f64() / hit.as_secs_f64().max(1e-9)
            )
        },
    ));
    targets.push(compare(
        "memory rate limiter",
        "adds under 1 µs of gateway CPU per call (hit with the limit against hit without)",
        ours(Call::RestHitMemoryLimit).and_then(cpu),
        ours(Call::RestHit).and_then(cpu),
        |limited, plain| limited.as_secs_f64() - plain.as_secs_f64() < 1e-6,
        |limited, plain| {
            format!(
                "{:+.1} µs/call ({} vs {})",
                (limited.as_secs_f64() - plain.as_secs_f64()) * 1e6,
                micros(Some(limited)),
                micros(Some(plain))
            )
        },
    ));
    targets.push(compare(
        "Redis rate limiter",
        "adds under 0.3 ms at p50 (hit with the limit against hit without)",
        ours(Call::RestHitRedisLimit).map(p50),
        ours(Call::RestHit).map(p50),
        |limited, plain| limited.as_secs_f64() - plain.as_secs_f64() < 0.3e-3,
        |limited, plain| {
            format!(
                "{:+.3} ms (p50 {} vs {} ms)",
                (limited.as_secs_f64() - plain.as_secs_f64()) * 1e3,
                report::ms(limited),
                report::ms(plain)
            )
        },
    ));
    targets
}

/// A target judged on two figures of this run, or "not measured" when one is missing.
fn compare(
    name: &str,
    goal: &str,
    a: Option<Duration>,
    b: Option<Duration>,
    pass: impl Fn(Duration, Duration) -> bool,
    show: impl Fn(Duration, Duration) -> String,
) -> TargetCheck {
    let (measured, verdict) = match (a, b) {
        (Some(a), Some(b)) => (show(a, b), if pass(a, b) { Verdict::Pass } else { Verdict::Miss }),
        _ => ("–".into(), Verdict::NotMeasured("a case it needs did not run".into())),
    };
    TargetCheck {
        name: name.into(),
        goal: goal.into(),
        measured,
        verdict,
    }
}
