//! Smoke test: the benchmark runs for about a second in each scenario this
//! machine can run and reports sane figures. The figures themselves belong
//! in BENCHMARKS.md, not here. The Meshwork sidecars run in-process (cargo
//! builds no `mesh` binary for this package's tests; the e2e test
//! `bench::the_benchmark_measures_sidecar_processes_and_their_span_export`
//! runs them as processes); nginx and nghttpx run where installed and are
//! skipped with a message otherwise.
//!
//! Our own paths (direct and Meshwork) must be free of errors at every step.
//! So must the peer proxies, except at the heaviest concurrency: nginx opens
//! one upstream connection per concurrent call, and on a loaded CI machine
//! some of 1,024 simultaneous TLS connections fail. That is a figure the
//! table reports, not a fault of the tool.

use std::time::Duration;

use clap::Parser;
use meshwork_bench::{BenchArgs, CallKind, Report, ScenarioKind, Step};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn args(extra: &[&str]) -> BenchArgs {
    let argv = [
        "meshwork-bench",
        "--in-process",
        "--duration",
        "100ms",
        "--warmup",
        "20ms",
        "--idle-connections",
        "5",
        "--idle-streams",
        "20",
    ];
    Cli::try_parse_from(argv.iter().chain(extra)).expect("arguments").args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_available_scenario_reports_sane_figures() {
    let report: Report = meshwork_bench::run(args(&[])).await.expect("the benchmark runs");
    let markdown = report.markdown();
    println!("{markdown}");

    for (kind, reason) in &report.skipped {
        println!("skipped {kind}: {reason}");
        // In-process sidecars export no spans, so the collector scenario is skipped.
        let expected = match kind {
            ScenarioKind::Nginx | ScenarioKind::Nghttpx => reason.contains("not installed"),
            ScenarioKind::MeshworkCollector | ScenarioKind::MeshworkUp => reason.contains("in-process"),
            _ => false,
        };
        assert!(
            expected,
            "only a missing peer proxy or a scenario that needs sidecar processes may be skipped: {kind}: {reason}"
        );
    }
    for kind in [ScenarioKind::Direct, ScenarioKind::Meshwork] {
        assert!(report.scenario(kind).is_some(), "{kind} did not run");
    }
    assert_eq!(report.scenarios.len() + report.skipped.len(), 6);

    let heaviest = report.steps.iter().filter_map(closed_concurrency).max();
    for scenario in &report.scenarios {
        let kind = scenario.kind;
        assert_eq!(scenario.steps.len(), report.steps.len(), "{kind}: every step ran");
        let is_process = matches!(kind, ScenarioKind::Nginx | ScenarioKind::Nghttpx);
        for result in &scenario.steps {
            let what = format!("{kind} / {}", result.step.label());
            assert_eq!(result.failure, None, "{what}");
            if let Some(load) = &result.load {
                assert!(load.calls > 0, "{what}: no calls");
                let may_fail = is_process && closed_concurrency(&result.step) == heaviest;
                if !may_fail {
                    let (errors, examples) = (&load.errors, &load.error_examples);
                    assert!(errors.is_empty(), "{what}: errors {errors:?}, e.g. {examples:?}");
                }
                assert!(load.latency.p50 > Duration::ZERO, "{what}: {:?}", load.latency);
                assert!(load.latency.is_ordered(), "{what}: {:?}", load.latency);
            } else {
                assert!(!result.step.is_load(), "{what}: no load figures");
            }
            let expected_proxies = if kind == ScenarioKind::Direct { 0 } else { 2 };
            assert_eq!(result.proxies.len(), expected_proxies, "{what}");
            for proxy in &result.proxies {
                // Processes are measured; in-process sidecars are not.
                assert_eq!(proxy.memory.is_some(), is_process, "{what}: {proxy:?}");
                if result.step.is_load() {
                    assert_eq!(proxy.cpu.is_some(), is_process, "{what}: {proxy:?}");
                }
                if result.step == Step::Idle && is_process {
                    assert!(proxy.memory > Some(1024 * 1024), "{what}: {proxy:?}");
                }
            }
        }
    }

    assert!(markdown.contains("| unary 100 B ×32 | direct |"), "{markdown}");
    assert!(markdown.contains("| unary 100 B ×32 | meshwork |"), "{markdown}");
    assert!(markdown.contains("Targets"), "{markdown}");
}

/// `--deadline`: every call carries `grpc-timeout`, which the sidecars
/// enforce and re-encode; calls still succeed, and the report says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_with_a_deadline_go_through_the_sidecars() {
    let report: Report = meshwork_bench::run(args(&[
        "--scenarios",
        "direct,meshwork",
        "--deadline",
        "5s",
        "--growth-concurrency",
        "1",
        "--growth-payloads",
        "100B",
    ]))
    .await
    .expect("the benchmark runs");
    let markdown = report.markdown();
    assert!(markdown.contains("every call sent with a 5s deadline"), "{markdown}");
    let meshwork = report.scenario(ScenarioKind::Meshwork).expect("meshwork ran");
    for result in &meshwork.steps {
        if let Some(load) = &result.load {
            let what = result.step.label();
            assert!(load.calls > 0, "{what}: no calls");
            assert!(load.errors.is_empty(), "{what}: {:?}", load.error_examples);
        }
    }
}

/// The concurrency of a closed-loop unary step.
fn closed_concurrency(step: &Step) -> Option<usize> {
    match *step {
        Step::Closed {
            kind: CallKind::Unary,
            concurrency,
            ..
        } => Some(concurrency),
        _ => None,
    }
}

#[tokio::test]
async fn nonsense_is_refused_before_anything_starts() {
    let error = meshwork_bench::run(args(&["--concurrency", "0"]))
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("at least 1"), "{error:#}");
}
