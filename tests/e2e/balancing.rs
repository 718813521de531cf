//! Balancing over replicas through real sidecars: calls spread per request
//! over every replica, a slow replica gets fewer calls (peak-EWMA), a
//! replica that dies under load costs no idempotent call and is ejected,
//! then probed back in, and edits to mesh.toml (replicas added, removed, a
//! broken edit) are followed without a restart.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::time::Instant;

use crate::support::replicas::{MAX_REPLICAS, Policy, ReplicaMesh, UNARY_IDEMPOTENT, echo};

/// Runs `workers` concurrent callers making `calls` unary calls each;
/// panics on any failure.
async fn load(mesh: &ReplicaMesh, workers: usize, calls: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let mut client = mesh.client().await;
        tasks.spawn(async move {
            for _ in 0..calls {
                client.unary(echo(16)).await.expect("call succeeds");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_every_replica() {
    let mesh = ReplicaMesh::start(3, Policy::default()).await;
    // One connection from the app, many calls: balancing is per call.
    load(&mesh, 8, 60).await;
    let counts = mesh.counts();
    println!("480 calls over 3 replicas: {counts:?}");
    assert_eq!(mesh.total_calls(), 480);
    for (replica, &count) in counts.iter().enumerate() {
        assert!(count >= 48, "replica {replica} got only {count} of 480: {counts:?}");
    }
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_gets_fewer_calls() {
    let mesh = ReplicaMesh::start(3, Policy::default()).await;
    mesh.apps[2].delay_ms.store(40, Ordering::SeqCst);
    load(&mesh, 8, 50).await;
    let counts = mesh.counts();
    println!("400 calls, replica 2 slow (40 ms): {counts:?}");
    let fast = counts[0].min(counts[1]);
    assert!(
        counts[2] * 2 < fast,
        "the slow replica should get well under half a fast one's calls: {counts:?}"
    );
    mesh.shutdown().await;
}

const CALLERS: usize = 4;

/// Steady load from 4 callers while replica 1's app is killed: every call
/// succeeds (retried elsewhere), replica 1 is ejected, and once its app is
/// back a probe puts it back in service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_app_killed_under_load_no_call_fails_then_it_comes_back() {
    let mesh = Arc::new(ReplicaMesh::start(3, Policy::tables(UNARY_IDEMPOTENT)).await);
    let stop_at = Instant::now() + Duration::from_millis(2500);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let mut client = mesh.client().await;
        tasks.spawn(async move {
            let mut n = 0u32;
            while Instant::now() < stop_at {
                if let Err(status) = client.unary(echo(16)).await {
                    panic!("call {n} failed while a replica died: {status:?}");
                }
                n += 1;
            }
            n
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    mesh.apps[1].kill();
    let killed_at = mesh.apps[1].calls();
    let mut calls = 0;
    while let Some(done) = tasks.join_next().await {
        calls += done.expect("worker");
    }
    let ejected = format!(
        "meshwork_outbound_endpoint_ejections_total{{destination=\"echo\",endpoint=\"{}\"}}",
        mesh.ports(1).inbound
    );
    let ejections = mesh.caller_metric(&ejected).await;
    let retries = mesh
        .caller_metric("meshwork_outbound_retries_total{destination=\"echo\"}")
        .await;
    println!(
        "{calls} calls under load, none failed; replica 1 killed after {killed_at} calls; {retries} retries; ejections {ejections}; per replica {:?}",
        mesh.counts()
    );
    assert_eq!(ejections, 1.0, "replica 1 was ejected once");
    // Aborting the app's tasks takes effect at their next await, so a call
    // already inside a handler (at most one per caller) may still finish.
    let after_kill = mesh.apps[1].calls() - killed_at;
    assert!(
        after_kill <= CALLERS as u64,
        "a dead app handles nothing new: {after_kill} calls after the kill"
    );

    // Back up: a probe (at most ~2 s after the last) finds it and it takes
    // calls again.
    mesh.apps[1].restart().await;
    let mut client = mesh.client().await;
    let deadline = Instant::now() + Duration::from_secs(8);
    while mesh.apps[1].calls() == killed_at {
        assert!(
            Instant::now() < deadline,
            "replica 1 never came back: {:?}",
            mesh.counts()
        );
        client.unary(echo(16)).await.expect("call succeeds");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("replica 1 back in service after its restart: {:?}", mesh.counts());
    let Ok(mesh) = Arc::try_unwrap(mesh) else {
        panic!("mesh still shared")
    };
    mesh.shutdown().await;
}

/// A replica's sidecar stops under load: its calls are refused at connect,
/// which proves they never reached an app, so they go elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_sidecar_stopped_under_load_no_call_fails() {
    let mut mesh = ReplicaMesh::start(3, Policy::tables(UNARY_IDEMPOTENT)).await;
    let mut tasks = tokio::task::JoinSet::new();
    let stop_at = Instant::now() + Duration::from_millis(2000);
    for _ in 0..4 {
        let mut client = mesh.client().await;
        tasks.spawn(async move {
            let mut n = 0u32;
            while Instant::now() < stop_at {
                client.unary(echo(16)).await.expect("no call fails");
                n += 1;
            }
            n
        });
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    mesh.stop_sidecar(2).await;
    let stopped_at = mesh.apps[2].calls();
    let mut calls = 0;
    while let Some(done) = tasks.join_next().await {
        calls += done.expect("worker");
    }
    println!(
        "{calls} calls, none failed, replica 2's sidecar stopped; per replica {:?}",
        mesh.counts()
    );
    assert_eq!(mesh.apps[2].calls(), stopped_at);
    mesh.shutdown().await;
}

/// Makes calls until `replica` has handled one more; panics after 10 s.
async fn until_reached(mesh: &ReplicaMesh, replica: usize) {
    let mut client = mesh.client().await;
    let before = mesh.apps[replica].calls();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mesh.apps[replica].calls() == before {
        assert!(
            Instant::now() < deadline,
            "replica {replica} never called: {:?}",
            mesh.counts()
        );
        client.unary(echo(8)).await.expect("call succeeds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_toml_edits_are_followed_without_restart() {
    const { assert!(MAX_REPLICAS >= 3) };
    // The file lists 2 replicas; a third already runs.
    let mesh = ReplicaMesh::start_with(2, 3, Policy::default()).await;
    load(&mesh, 4, 25).await;
    assert_eq!(
        mesh.apps[2].calls(),
        0,
        "replica 2 is not in mesh.toml yet: {:?}",
        mesh.counts()
    );

    let edited = Instant::now();
    mesh.write_config(3);
    until_reached(&mesh, 2).await;
    println!("replica added: first call after {:?}", edited.elapsed());

    // A broken edit is ignored (and logged): all three still serve.
    mesh.write_text("trust_domain = \"test.local\"\n[services.echo]\nreplicas = \"three\"\n");
    tokio::time::sleep(Duration::from_millis(400)).await;
    for replica in 0..3 {
        until_reached(&mesh, replica).await;
    }

    // Down to one replica: the others get nothing more.
    mesh.write_config(1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = mesh.counts();
    load(&mesh, 4, 25).await;
    let after = mesh.counts();
    println!("replicas removed: {before:?} -> {after:?}");
    assert_eq!(after[0], before[0] + 100);
    assert_eq!((after[1], after[2]), (before[1], before[2]));
    mesh.shutdown().await;
}
