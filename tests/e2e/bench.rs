//! The benchmark as it is normally run: the sidecars as `mesh-proxy`
//! processes, measured from /proc, exporting their spans to the bench's own
//! collector (`--collector`). The bench's smoke test runs them in-process
//! only, as cargo builds no `mesh-proxy` for that package's tests.

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
    ];
    let args = Cli::try_parse_from(argv).expect("arguments").args;
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
            calls += load.calls;
        }
    }
    assert!(calls > 0, "no calls were made");
    let spans = report.spans_collected.expect("the collector ran");
    assert!(spans > 0, "no spans reached the collector after {calls} calls");
}
