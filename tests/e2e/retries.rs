//! Retries, deadlines and fault injection through real sidecars: only what
//! is safe is retried, within the budget; deadlines are honoured, capped
//! and passed on; injected faults behave like real ones.

use std::{sync::atomic::Ordering, time::Duration};

use meshwork_proto::echo::echo_service_client::EchoServiceClient;
use tokio::time::Instant;
use tonic::{Code, Request, transport::Channel};

use crate::support::replicas::{Fail, Policy, ReplicaMesh, UNARY_IDEMPOTENT, echo, raw_unary};

const RETRIES: &str = "meshwork_outbound_retries_total{destination=\"echo\"}";
const REFUSED: &str = "meshwork_outbound_retries_refused_total{destination=\"echo\"}";

/// How late past its deadline a call may end and still be "about the
/// deadline": room for a debug build on a busy 2-core machine.
const TIMING_SLACK: Duration = Duration::from_millis(250);

/// Makes calls until one succeeds (at most 5 s): the connections are open after.
async fn warm_up(client: &mut EchoServiceClient<Channel>) {
    let until = Instant::now() + Duration::from_secs(5);
    while client.unary(echo(8)).await.is_err() {
        assert!(Instant::now() < until, "no call succeeded within 5 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_call_is_retried_on_unavailable_in_headers_and_in_trailers() {
    let mesh = ReplicaMesh::start(2, Policy::tables(UNARY_IDEMPOTENT)).await;
    let mut client = mesh.client().await;

    mesh.script.fail_next(Fail::InHeaders);
    let rsp = client
        .unary(echo(64))
        .await
        .expect("retried after a trailers-only UNAVAILABLE");
    assert!(rsp.get_ref().message.starts_with("replica-"));
    assert_eq!(mesh.total_calls(), 2);

    mesh.script.fail_next(Fail::InTrailers);
    client
        .unary(echo(64))
        .await
        .expect("retried after UNAVAILABLE in trailers");
    assert_eq!(mesh.total_calls(), 4);
    assert_eq!(mesh.caller_metric(RETRIES).await, 2.0);
    // The replayed body is the whole body.
    let seen = mesh.apps.iter().flat_map(|a| a.seen.lock().expect("seen").clone());
    assert!(seen.into_iter().all(|(_, len)| len == 64));
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_call_is_not_retried_on_unavailable() {
    let mesh = ReplicaMesh::start(2, Policy::default()).await;
    let mut client = mesh.client().await;
    for fail in [Fail::InHeaders, Fail::InTrailers] {
        let before = mesh.total_calls();
        mesh.script.fail_next(fail);
        let status = client.unary(echo(8)).await.expect_err("not retried");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().starts_with("replica says"), "{status:?}");
        assert_eq!(mesh.total_calls(), before + 1, "{fail:?}: sent once");
    }
    assert_eq!(mesh.caller_metric(RETRIES).await, 0.0);
    mesh.shutdown().await;
}

/// Unprocessed calls are retried whatever the method: a replica whose
/// sidecar is gone refuses the connection; a replica whose app is gone has
/// its sidecar say so (`meshwork-not-processed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_call_is_retried_when_it_never_reached_the_app() {
    let mut mesh = ReplicaMesh::start(3, Policy::default()).await;
    let mut client = mesh.client().await;
    mesh.stop_sidecar(1).await;
    mesh.apps[2].kill_and_wait().await;
    for i in 0..30 {
        let rsp = client
            .unary(echo(8))
            .await
            .unwrap_or_else(|s| panic!("call {i}: {s:?}"));
        assert_eq!(rsp.get_ref().message, "replica-0");
    }
    let retries = mesh.caller_metric(RETRIES).await;
    println!("30 non-idempotent calls, 2 of 3 replicas down: {retries} retries, all answered by replica 0");
    assert_eq!(mesh.apps[0].calls(), 30, "each call reached an app exactly once");
    assert!(
        retries >= 2.0,
        "both dead replicas were tried and retried away from: {retries}"
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_replay_cap_is_not_replayed() {
    let tables = format!("{UNARY_IDEMPOTENT}\n[retry]\nmax_replay_bytes = 1024\n");
    let mesh = ReplicaMesh::start(2, Policy::tables(&tables)).await;
    let mut client = mesh.client().await;

    mesh.script.fail_next(Fail::InHeaders);
    let status = client.unary(echo(4096)).await.expect_err("sent once");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(mesh.total_calls(), 1);

    mesh.script.fail_next(Fail::InHeaders);
    client.unary(echo(512)).await.expect("small enough to replay");
    assert_eq!(mesh.total_calls(), 3);
    let sizes: Vec<_> = mesh
        .apps
        .iter()
        .flat_map(|a| a.seen.lock().expect("seen").clone())
        .map(|(_, len)| len)
        .collect();
    assert_eq!(sizes.iter().filter(|&&l| l == 4096).count(), 1, "{sizes:?}");
    mesh.shutdown().await;
}

/// Every answer is lost after the app handled it (an `after_response`
/// fault, a real failure and so retryable; a plain injected abort is not
/// retried at all); retries stay within the budget: attempts ≤ calls ×
/// (1 + 0.2) + the floor of 10 per second of the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_attempts_when_everything_fails() {
    let tables = format!(
        "{UNARY_IDEMPOTENT}\n[[services.echo.faults]]\nabort = {{ percent = 100.0, status = \"UNAVAILABLE\", after_response = true }}\n\n[retry]\nbackoff_base = \"1ms\"\nbackoff_max = \"5ms\"\n"
    );
    let mesh = ReplicaMesh::start(2, Policy::tables(&tables)).await;
    let calls = 600u32;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let mut client = mesh.client().await;
        tasks.spawn(async move {
            for _ in 0..calls / 6 {
                let status = client.unary(echo(8)).await.expect_err("every answer lost");
                assert_eq!(status.code(), Code::Unavailable);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("worker");
    }
    let seconds = mesh.started.elapsed().as_secs_f64().ceil().min(10.0);
    let retries = mesh.caller_metric(RETRIES).await;
    let refused = mesh.caller_metric(REFUSED).await;
    let attempts = f64::from(calls) + retries;
    let bound = f64::from(calls) * 1.2 + 10.0 * seconds;
    println!(
        "budget: {calls} calls, {retries} retries, {refused} refused; attempts/calls = {:.3} (bound {:.3} with {seconds} s of floor)",
        attempts / f64::from(calls),
        bound / f64::from(calls)
    );
    assert!(attempts <= bound, "{attempts} attempts > {bound}");
    assert!(
        retries >= f64::from(calls) * 0.2 * 0.9,
        "the budget allows ~20 %: {retries}"
    );
    assert!(refused > 0.0);
    assert_eq!(mesh.total_calls() as f64, attempts, "every attempt reached an app");
    mesh.shutdown().await;
}

/// An injected abort stands in for the upstream's answer (as in Istio): an
/// idempotent call is not retried, so the budget is not spent on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_abort_is_not_retried() {
    let tables = format!(
        "{UNARY_IDEMPOTENT}\n[[services.echo.faults]]\nabort = {{ percent = 100.0, status = \"UNAVAILABLE\" }}\n"
    );
    let mesh = ReplicaMesh::start(2, Policy::tables(&tables)).await;
    let mut client = mesh.client().await;
    for _ in 0..20 {
        let status = client.unary(echo(8)).await.expect_err("aborted");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("aborted"), "{status:?}");
    }
    assert_eq!(mesh.caller_metric(RETRIES).await, 0.0, "no retries");
    assert_eq!(mesh.total_calls(), 0, "aborted before reaching any app");
    mesh.shutdown().await;
}

/// A call with `grpc-timeout` set as metadata: tonic's own `set_timeout`
/// would also time the call out in the client, racing the sidecar's answer.
fn with_timeout(timeout: Duration) -> Request<meshwork_proto::echo::EchoRequest> {
    let mut req = Request::new(echo(8));
    let value = format!("{}m", timeout.as_millis());
    req.metadata_mut().insert("grpc-timeout", value.parse().expect("value"));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_shorter_than_an_injected_delay_is_deadline_exceeded() {
    let tables = "[[services.echo.faults]]\ndelay = { percent = 100.0, duration = \"2s\" }\n";
    let mesh = ReplicaMesh::start(1, Policy::tables(tables)).await;
    let deadline = Duration::from_millis(200);
    let started = Instant::now();
    let (status, message) = raw_unary(mesh.caller_outbound, "200m").await;
    let took = started.elapsed();
    println!("deadline 200 ms, injected delay 2 s: grpc-status {status} after {took:?}");
    assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
    assert_eq!(message, "deadline of 200ms exceeded calling echo");
    assert!(took >= deadline && took < deadline + TIMING_SLACK, "{took:?}");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remaining_time_is_passed_on_and_capped_by_configuration() {
    let policy = Policy {
        service_keys: "timeout = \"300ms\"".into(),
        tables: String::new(),
    };
    let mesh = ReplicaMesh::start(1, policy).await;
    let mut client = mesh.client().await;
    // The first call also opens the mTLS connection; on a busy machine that
    // alone can take longer than the deadlines below, so it is made first.
    warm_up(&mut client).await;
    let seen = |mesh: &ReplicaMesh| {
        let last = mesh.apps[0].seen.lock().expect("seen").last().cloned();
        let value = last.and_then(|(t, _)| t).expect("a grpc-timeout reached the app");
        let (digits, unit) = value.split_at(value.len() - 1);
        let n: u64 = digits.parse().expect("digits");
        match unit {
            "n" => Duration::from_nanos(n),
            "u" => Duration::from_micros(n),
            "m" => Duration::from_millis(n),
            "S" => Duration::from_secs(n),
            other => panic!("unit {other}"),
        }
    };

    // The caller's 200 ms: the app sees what is left of it.
    client
        .unary(with_timeout(Duration::from_millis(200)))
        .await
        .expect("in time");
    let passed = seen(&mesh);
    println!("caller sent 200 ms; the app saw {passed:?}");
    assert!(
        passed <= Duration::from_millis(200) && passed > Duration::from_millis(100),
        "{passed:?}"
    );

    // A longer (or no) deadline is cut to the configured 300 ms.
    client
        .unary(with_timeout(Duration::from_secs(5)))
        .await
        .expect("in time");
    assert!(seen(&mesh) <= Duration::from_millis(300));
    client.unary(echo(8)).await.expect("in time");
    assert!(seen(&mesh) <= Duration::from_millis(300));

    // With no caller deadline, the cap still ends a slow call (and a
    // caller's longer one too: tonic would time out only after 5 s).
    mesh.apps[0].delay_ms.store(2000, Ordering::SeqCst);
    let started = Instant::now();
    let status = client
        .unary(with_timeout(Duration::from_secs(5)))
        .await
        .expect_err("capped");
    let took = started.elapsed();
    println!(
        "caller 5 s, cap 300 ms, app takes 2 s: {:?} after {took:?}",
        status.code()
    );
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(status.message(), "deadline of 300ms exceeded calling echo");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(300) + TIMING_SLACK,
        "{took:?}"
    );
    let started = Instant::now();
    let status = client.unary(echo(8)).await.expect_err("capped");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_millis(300) + TIMING_SLACK);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_spent_before_the_call_starts_is_never_sent() {
    let mesh = ReplicaMesh::start(1, Policy::default()).await;
    // With the connection to the replica open, a call sent would reach the
    // app before the deadline's timer fires (the timer's resolution is 1 ms).
    warm_up(&mut mesh.client().await).await;
    // Whether one such call would win that race varies; twenty would not
    // all lose it.
    let before = mesh.total_calls();
    for _ in 0..20 {
        let (status, message) = raw_unary(mesh.caller_outbound, "0n").await;
        assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
        assert_eq!(message, "deadline of 0s exceeded calling echo");
    }
    assert_eq!(mesh.total_calls(), before, "the app never saw them");
    mesh.shutdown().await;
}

/// Callers whose deadlines pass as they send (here 1 µs, so each call is
/// cancelled right after it leaves) reset their streams in bursts, and
/// the outbound sidecar passes the cancellations on to the inbound. Under
/// h2's default rapid-reset bound both sidecars answered such bursts with
/// GOAWAY: every call on the connection failed, and the replica was
/// ejected as if it had failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_whose_deadlines_pass_as_they_send_leave_the_mesh_working() {
    const CALLERS: usize = 32;
    const CALLS_EACH: usize = 100;
    let mesh = ReplicaMesh::start(1, Policy::default()).await;
    let mut client = mesh.client().await;
    warm_up(&mut client).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let mut client = client.clone();
        tasks.spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..CALLS_EACH {
                let mut req = Request::new(echo(8));
                req.set_timeout(Duration::from_micros(1));
                if let Err(status) = client.unary(req).await {
                    failures.push((status.code(), status.message().to_owned()));
                }
            }
            failures
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failures.extend(done.expect("caller"));
    }
    let ejected = format!(
        "meshwork_outbound_endpoint_ejections_total{{destination=\"echo\",endpoint=\"{}\"}}",
        mesh.ports(0).inbound
    );
    let ejections = mesh.caller_metric(&ejected).await;
    let unexpected: Vec<_> = failures
        .iter()
        .filter(|(code, _)| !matches!(code, Code::DeadlineExceeded | Code::Cancelled))
        .collect();
    println!(
        "{} calls with a 1 µs deadline: {} failed, {} of them other than by their deadline; ejections {ejections}",
        CALLERS * CALLS_EACH,
        failures.len(),
        unexpected.len()
    );
    assert!(
        unexpected.is_empty(),
        "calls failed for another reason: {:?}",
        &unexpected[..unexpected.len().min(5)]
    );
    assert_eq!(ejections, 0.0, "the replica was never at fault");
    client.unary(echo(8)).await.expect("the mesh still carries calls");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_timeout_is_invalid_argument() {
    let mesh = ReplicaMesh::start(1, Policy::default()).await;
    let mut client = mesh.client().await;
    let mut req = Request::new(echo(8));
    req.metadata_mut()
        .insert("grpc-timeout", "soon".parse().expect("value"));
    let status = client.unary(req).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("malformed grpc-timeout 'soon'"),
        "{status:?}"
    );
    assert_eq!(mesh.total_calls(), 0);
    mesh.shutdown().await;
}

/// `after_response`: the app handles the call, its answer is lost; the
/// caller gets the status, and a non-idempotent call is not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_after_response_lets_the_app_handle_the_call() {
    let tables =
        "[[services.echo.faults]]\nabort = { percent = 100.0, status = \"UNAVAILABLE\", after_response = true }\n";
    let mesh = ReplicaMesh::start(2, Policy::tables(tables)).await;
    let mut client = mesh.client().await;
    let status = client.unary(echo(8)).await.expect_err("answer dropped");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().starts_with("fault injected"), "{status:?}");
    assert_eq!(mesh.total_calls(), 1, "handled once, not retried");
    mesh.shutdown().await;
}
