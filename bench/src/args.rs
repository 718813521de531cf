//! The command line of the benchmark (`meshwork-bench`, later `mesh bench`).

use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

/// What to measure and for how long. Every scenario runs the same steps
/// against the same echo server, in one run.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenarios to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,meshwork,meshwork-collector,meshwork-up,nginx,nghttpx"
    )]
    pub scenarios: Vec<ScenarioKind>,
    /// Measured time of each load step.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Unmeasured load before each step, so connections, pools and caches are warm.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// A smoke run: 500 ms per step, 200 ms warm-up and fewer idle
    /// connections and streams (a few seconds per scenario). Overrides
    /// --duration, --warmup, --idle-connections and --idle-streams.
    #[arg(long)]
    pub quick: bool,
    /// Concurrent unary calls of the headline closed-loop step (the throughput and CPU targets).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Further concurrency levels measured with unary calls (growth).
    #[arg(long, value_delimiter = ',', default_value = "1,256,1024")]
    pub growth_concurrency: Vec<usize>,
    /// Fixed request rate of the open-loop step (the added-latency targets), calls per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// In the open-loop step, take turns every 20 ms between the scenario's
    /// path and direct calls to the same echo server, so that both meet the
    /// same moments of the machine; the added latency (table and targets) is
    /// then over those direct calls. Each path gets half of the step's calls.
    #[arg(long)]
    pub paired: bool,
    /// Send every load call with this deadline (`grpc-timeout`), as most production
    /// gRPC clients do; the sidecars then enforce and re-encode it on every call.
    /// Default: no deadline.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    /// Payload bytes of each request and response in the headline steps.
    #[arg(long, value_parser = parse_size, default_value = "100")]
    pub payload: usize,
    /// Further payload sizes measured at --concurrency (growth). Accepts B, KiB and MiB suffixes.
    #[arg(long, value_parser = parse_size, value_delimiter = ',', default_value = "16KiB,1MiB")]
    pub growth_payloads: Vec<usize>,
    /// Responses per server-streaming call (each of --payload bytes).
    #[arg(long, default_value_t = 100)]
    pub stream_messages: u32,
    /// HTTP/2 connections the load generator opens to the scenario's entry
    /// point; calls are spread over them round-robin, as many streams each.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Idle HTTP/2 connections opened to measure memory per connection.
    #[arg(long, default_value_t = 100)]
    pub idle_connections: usize,
    /// Open (idle) bidirectional streams held to measure memory per stream.
    #[arg(long, default_value_t = 1000)]
    pub idle_streams: usize,
    /// The sidecar binary: `mesh-proxy` (or `mesh`, run as `mesh proxy`).
    /// Default: the `mesh-proxy` next to this program (the same target directory).
    #[arg(long)]
    pub mesh_bin: Option<PathBuf>,
    /// Run the Meshwork sidecars inside this process instead of as `mesh
    /// proxy` processes (CPU and memory are then not measured).
    #[arg(long, conflicts_with = "mesh_bin")]
    pub in_process: bool,
    /// The `meshwork` scenario too exports its sidecars' spans to the OTLP
    /// collector this program runs (as `meshwork-collector` always does).
    /// Default: its spans go to the default endpoint (127.0.0.1:4317), where
    /// normally nothing listens. Sidecar processes only.
    #[arg(long, conflicts_with = "in_process")]
    pub collector: bool,
    /// The nginx binary. Default: `nginx` on PATH or in /usr/sbin.
    #[arg(long)]
    pub nginx_bin: Option<PathBuf>,
    /// The nghttpx binary. Default: `nghttpx` on PATH or in /usr/sbin.
    #[arg(long)]
    pub nghttpx_bin: Option<PathBuf>,
    /// Worker processes (nginx) or threads (nghttpx) of each peer proxy.
    /// Default: the number of CPUs, each peer at its strongest here (a Meshwork
    /// sidecar runs one thread).
    #[arg(long)]
    pub proxy_workers: Option<usize>,
    /// Instead of the table: a soak of this length (`30m`) through `mesh up`,
    /// a row of each sidecar's RSS, open connections and CPU per call every
    /// `--soak-sample`, unary calls at `--rate` and server streams beside them,
    /// with a fault and replica restarts (BENCHMARKS.md, "Soak").
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "in_process")]
    pub soak: Option<Duration>,
    /// Instead of the table: the edge benchmark. The Meshwork gateway (under
    /// `mesh up`, once per traffic policy) beside grpc-gateway and nginx, REST
    /// and gRPC calls of the shop's contracts at --concurrency and at --rate
    /// (BENCHMARKS.md, "The edge").
    #[arg(long, conflicts_with_all = ["in_process", "soak"])]
    pub edge: bool,
    /// How often the soak takes a row.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub soak_sample: Duration,
    /// How often the soak restarts one echo replica (app and sidecar).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub soak_restart_every: Duration,
    /// Share of the soak's calls a fault aborts with ABORTED, 0 to 100.
    #[arg(long, default_value_t = 1.0)]
    pub soak_fault_percent: f64,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// A way from the load generator to the echo server.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScenarioKind {
    /// Client → echo server: the floor.
    Direct,
    /// Client → Meshwork outbound sidecar → mTLS → inbound sidecar → echo server.
    Meshwork,
    /// Meshwork as above, its sidecars exporting every span to an OTLP
    /// collector the bench runs, as to Jaeger (sidecar processes only).
    MeshworkCollector,
    /// Meshwork as `mesh up` runs it: the launcher starts the sidecars,
    /// receives their spans and serves the dashboard, and is measured too.
    MeshworkUp,
    /// The same topology through two nginx gRPC proxies.
    Nginx,
    /// The same topology through two nghttpx proxies.
    Nghttpx,
}

impl ScenarioKind {
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Direct => "direct",
            ScenarioKind::Meshwork => "meshwork",
            ScenarioKind::MeshworkCollector => "meshwork-collector",
            ScenarioKind::MeshworkUp => "meshwork-up",
            ScenarioKind::Nginx => "nginx",
            ScenarioKind::Nghttpx => "nghttpx",
        }
    }
}

impl std::fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `100`, `100B`, `16KiB`, `1MiB` (also `k`/`KB`/`M`/`MB`, all powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits.parse().map_err(|_| format!("not a size: {text:?}"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("unknown size unit in {text:?} (use B, KiB or MiB)")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("2 k"), Ok(2048));
        assert!(parse_size("1GiB").is_err());
        assert!(parse_size("lots").is_err());
    }
}
