//! The benchmark as it is normally run: the sidecars as `mesh-proxy`
//! processes, measured from /proc, exporting their spans to the bench's own
//! collector (`--collector`), their open-loop step paired with direct calls
//! (`--paired`), or started by `mesh up` with its dashboard
//! (`meshwork-up`, and the soak). The bench's smoke test runs them
//! in-process only, as cargo builds no `mesh-proxy` for that package's tests.

use std::time::Duration;

use clap::Parser;
use meshwork_bench::{BenchArgs, ScenarioKind, Step};

use crate::support::mesh_process::MESH_PROXY;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_measures_sidecar_processes_and_their_span_export() {
    let argv = [
        "meshwork-bench",
        "--mesh-bin",
        MESH_PROXY,
        "--scenarios",
        "meshwork",
        "--collector",
        "--paired",
    ];
    let args = Cli::try_parse_from(argv.iter().chain(&BRIEF)).expect("arguments").args;
    let report = meshwork_bench::run(args).await.expect("the benchmark runs");

    let meshwork = report.scenario(ScenarioKind::Meshwork).expect("meshwork ran");
    assert!(meshwork.mode.contains("sidecar processes"), "{}", meshwork.mode);
    let mut calls = 0;
    for result in &meshwork.steps {
        let what = result.step.label();
        assert_eq!(result.failure, None, "{what}");
        assert_eq!(result.proxies.len(), 2, "{what}: outbound and inbound");
        for proxy in &result.proxies {
            let role = proxy.role;
            assert!(proxy.memory.is_some(), "{what}: {role}: memory read from /proc");
            if result.step == Step::Idle {
                assert!(proxy.memory > Some(1024 * 1024), "{what}: {role}: {proxy:?}");
            }
            if result.step.is_load() {
                assert!(proxy.cpu > Some(Duration::ZERO), "{what}: {role}: {proxy:?}");
            }
        }
        if let Some(load) = &result.load {
            assert!(load.errors.is_empty(), "{what}: {:?}", load.error_examples);
            assert!(
                result.stolen.is_some(),
                "{what}: the host's stolen time read from /proc/stat"
            );
            calls += load.calls;
        }
        if let Step::Open { rate, .. } = result.step {
            let path = result.load.as_ref().map_or(0, |l| l.calls);
            let direct = result
                .paired_direct
                .as_ref()
                .expect("--paired: direct calls beside the step's");
            assert!(direct.errors.is_empty(), "{what}: {:?}", direct.error_examples);
            // 500 ms at the rate, in 20 ms turns: every call scheduled went one way or the other.
            assert_eq!(
                path + direct.calls,
                u64::from(rate) / 2,
                "{what}: {path} + {}",
                direct.calls
            );
            assert!(path > 0 && direct.calls > 0, "{what}: {path} / {}", direct.calls);
        } else {
            assert!(result.paired_direct.is_none(), "{what}: only the open loop is paired");
        }
    }
    assert!(calls > 0, "no calls were made");
    let spans = report.spans_collected.expect("the collector ran");
    assert!(spans > 0, "no spans reached the collector after {calls} calls");
}

/// Short steps: the figures are not the point, that every one is read is.
const BRIEF: [&str; 14] = [
    "--duration",
    "500ms",
    "--warmup",
    "50ms",
    "--idle-connections",
    "5",
    "--idle-streams",
    "20",
    "--growth-concurrency",
    "1",
    "--growth-payloads",
    "100B",
    "--rate",
    "200",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mesh_up_the_launcher_is_measured_beside_its_sidecars() {
    let argv = ["meshwork-bench", "--mesh-bin", MESH_PROXY, "--scenarios", "meshwork-up"];
    let args = Cli::try_parse_from(argv.iter().chain(&BRIEF)).expect("arguments").args;
    let report = meshwork_bench::run(args).await.expect("the benchmark runs");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);

    let up = report.scenario(ScenarioKind::MeshworkUp).expect("meshwork-up ran");
    assert!(up.mode.contains("up`") && up.mode.contains("dashboard"), "{}", up.mode);
    for result in &up.steps {
        let what = result.step.label();
        assert_eq!(result.failure, None, "{what}");
        let roles: Vec<&str> = result.proxies.iter().map(|p| p.role).collect();
        assert_eq!(roles, ["outbound", "inbound", "launcher"], "{what}");
        for proxy in &result.proxies {
            assert!(proxy.memory.is_some(), "{what}: {}: memory read from /proc", proxy.role);
        }
        if result.step == Step::Idle {
            let memory: Vec<u64> = result.proxies.iter().filter_map(|p| p.memory).collect();
            assert!(memory.iter().all(|&m| m > 1024 * 1024), "{what}: {memory:?}");
        }
        if let Some(load) = &result.load {
            assert!(load.errors.is_empty(), "{what}: {:?}", load.error_examples);
            assert!(load.calls > 0, "{what}: no calls");
            for proxy in &result.proxies[..2] {
                assert!(proxy.cpu > Some(Duration::ZERO), "{what}: {}: {proxy:?}", proxy.role);
            }
        }
    }
    let markdown = report.markdown();
    assert!(markdown.contains("| meshwork-up |"), "{markdown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soak_samples_every_sidecar_through_faults_and_restarts() {
    let argv = [
        "meshwork-bench",
        "--mesh-bin",
        MESH_PROXY,
        "--soak",
        "4s",
        "--soak-sample",
        "2s",
        "--soak-restart-every",
        "1500ms",
        "--soak-fault-percent",
        "10",
        "--rate",
        "200",
    ];
    let args = Cli::try_parse_from(argv).expect("arguments").args;
    let report = meshwork_bench::run_soak(args).await.expect("the soak runs");
    println!("{}", report.markdown());

    assert_eq!(report.rows.len(), 2, "a row every 2 s of 4 s");
    let restarts: u32 = report.rows.iter().map(|r| r.restarts).sum();
    assert_eq!(restarts, 2, "a replica restarted at 1.5 s and at 3 s");
    let mut aborted = 0;
    for row in &report.rows {
        let names: Vec<&str> = row.sidecars.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["bench", "echo", "echo-1"]);
        assert!(row.unary.calls > 0 && row.streams.calls > 0, "{row:?}");
        for sidecar in &row.sidecars {
            assert!(sidecar.rss > 1024 * 1024, "{}: RSS read: {sidecar:?}", sidecar.name);
            assert!(
                sidecar.open_connections.is_some(),
                "{}: /metrics read: {sidecar:?}",
                sidecar.name
            );
        }
        // The client's sidecar is never restarted: its CPU is read every period.
        assert!(row.sidecars[0].cpu > Some(Duration::ZERO), "{row:?}");
        assert!(row.launcher_rss > 1024 * 1024, "{row:?}");
        for (code, n) in row.errors() {
            // The fault's status, and what a call in flight to a replica going down sees.
            let expected = ["Aborted", "Unavailable", "Cancelled", "DeadlineExceeded"];
            assert!(expected.contains(&code.as_str()), "unexpected {n} × {code}: {row:?}");
        }
        aborted += row.errors().get("Aborted").copied().unwrap_or(0);
    }
    assert!(aborted > 0, "the fault aborted no call");
    let markdown = report.markdown();
    assert!(markdown.contains("echo-1: RSS MiB / conns / CPU µs/call"), "{markdown}");
}

/// The edge benchmark end to end: `mesh up` with the gateway under each
/// traffic policy, grpc-gateway built from Debian's Go packages (which
/// `scripts/test` installs) in front of the same sidecars, and nginx. Every
/// case answers without an error, every edge process is read, and every
/// target of issue 12 is judged on figures of this run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_benchmark_measures_the_gateway_beside_grpc_gateway_and_nginx() {
    use meshwork_bench::edge::{Call, Edge};

    let argv = [
        "meshwork-bench",
        "--mesh-bin",
        MESH_PROXY,
        "--edge",
        "--duration",
        "400ms",
        "--warmup",
        "50ms",
        "--concurrency",
        "4",
        "--rate",
        "200",
    ];
    let args = Cli::try_parse_from(argv).expect("arguments").args;
    let report = meshwork_bench::run_edge(args).await.expect("the edge benchmark runs");

    assert!(report.skipped.is_empty(), "every edge ran: {:?}", report.skipped);
    for (edge, call) in [
        (Edge::Meshwork, Call::RestGet),
        (Edge::Meshwork, Call::GrpcGet),
        (Edge::Meshwork, Call::RestPost),
        (Edge::Meshwork, Call::RestHit),
        (Edge::Meshwork, Call::RestHitRedisLimit),
        (Edge::GrpcGateway, Call::RestGet),
        (Edge::GrpcGateway, Call::RestPost),
        (Edge::Nginx, Call::RestHit),
        (Edge::Nginx, Call::RestHitLimitReq),
    ] {
        assert!(report.row(edge, call).is_some(), "{edge:?} {call:?} was measured");
    }
    for row in &report.rows {
        let what = format!("{} {}", row.edge.name(), row.call.label());
        for load in [&row.closed, &row.open] {
            assert!(load.calls > 0, "{what}: no calls answered");
            assert!(load.errors.is_empty(), "{what}: {:?}", load.error_examples);
        }
        if row.edge != Edge::Backend {
            let edge = &row.closed_usage[0];
            assert!(
                edge.cpu_per_call.is_some() && edge.peak_rss > Some(1024 * 1024),
                "{what}: {edge:?}"
            );
        }
    }
    let redis = report.row(Edge::Meshwork, Call::RestHitRedisLimit).expect("measured");
    assert!(
        redis
            .closed_usage
            .iter()
            .any(|u| u.role == "redis" && u.cpu_per_call > Some(Duration::ZERO)),
        "the Redis limit reached Redis: {:?}",
        redis.closed_usage
    );
    assert_eq!(report.targets.len(), 6, "{:?}", report.targets);
    for target in &report.targets {
        assert!(
            !matches!(target.verdict, meshwork_bench::Verdict::NotMeasured(_)),
            "{}: {:?}",
            target.name,
            target.verdict
        );
    }
    let markdown = report.markdown();
    assert!(markdown.contains("| grpc-gateway | REST GET product |"), "{markdown}");
}
