//! Real TLS handshakes against a sidecar's inbound listener and from an
//! outbound sidecar: who is let in, who is refused and why, authorization by
//! SPIFFE ID, server identity checks, and certificate rotation without a
//! restart.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use meshwork_proto::echo::EchoRequest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::{
    certs::TestCerts,
    http,
    mesh::Mesh,
    tls::{self, Outcome},
};

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

fn assert_refused(outcome: Outcome, reason: &str) {
    match outcome {
        Outcome::Refused(why) => assert!(why.contains(reason), "refused for {why:?}, expected {reason:?}"),
        Outcome::Accepted { .. } => panic!("connection accepted, expected a refusal ({reason})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_client_certificate_is_accepted() {
    let mesh = Mesh::start().await;
    let caller = mesh.certs.leaf_on_disk("caller");
    let outcome = tls::connect(mesh.echo_inbound, tls::client_config(Some(&caller))).await;
    let Outcome::Accepted { server_cert } = outcome else {
        panic!("valid mesh identity refused: {outcome:?}")
    };
    let echo_cert = tls::der_of(&mesh.certs.leaf_on_disk("echo").cert_pem);
    assert_eq!(server_cert, echo_cert);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_refused() {
    let mesh = Mesh::start().await;
    // Same trust domain and workload name, but another CA.
    let foreign = TestCerts::new(&["caller"]);
    let leaf = foreign.leaf_on_disk("caller");
    let outcome = tls::connect(mesh.echo_inbound, tls::client_config(Some(&leaf))).await;
    assert_refused(outcome, "UnknownCA");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_is_refused() {
    let mesh = Mesh::start().await;
    let outcome = tls::connect(mesh.echo_inbound, tls::client_config(None)).await;
    assert_refused(outcome, "CertificateRequired");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_client_certificate_is_refused() {
    let mesh = Mesh::start().await;
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let expired = mesh
        .certs
        .ca
        .issue_leaf_for("spiffe://test.local/service/caller", now - 2 * hour, now - hour)
        .expect("leaf");
    let outcome = tls::connect(mesh.echo_inbound, tls::client_config(Some(&expired))).await;
    assert_refused(outcome, "CertificateExpired");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_without_permission_is_denied_by_name() {
    let mesh = Mesh::start().await;
    let mut stranger = mesh.stranger_echo().await;
    let status = stranger.unary(echo("hi")).await.expect_err("policy denies Unary");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "stranger may not call meshwork.echo.v1.EchoService/Unary"
    );
    // The rule that allows ServerStream does let that through.
    let req = EchoRequest {
        message: "ok".into(),
        repeat: 2,
        payload: Vec::new(),
    };
    let stream = stranger.server_stream(req).await.expect("allowed").into_inner();
    let items: Vec<_> = stream.collect().await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(Result::is_ok));
    mesh.shutdown().await;
}

/// The catalog's inbound address is served by "evil", with a certificate
/// from the mesh CA that is valid in every way except who it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_with_wrong_identity_is_refused() {
    let mesh = Mesh::start().await;
    // Health is not a mesh contract, so the `:authority` routes it: to catalog.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.caller_outbound))
        .expect("endpoint")
        .origin("http://catalog".parse().expect("uri"))
        .connect()
        .await
        .expect("connect");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect_err("impostor refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "catalog ({addr}) is unavailable: identity mismatch: catalog at {addr} presented \
             spiffe://test.local/service/evil, expected spiffe://test.local/service/catalog",
            addr = mesh.catalog_inbound
        )
    );
    // The refusal is counted on the caller's side too.
    let (_, metrics) = http::get(mesh.caller_admin, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("meshwork_tls_handshake_failures_total{direction=\"outbound\",reason=\"foreign_identity\"} "),
        "{metrics}"
    );
    mesh.shutdown().await;
}

/// New certificate files are picked up without a restart: new connections
/// get the new certificate while a stream on an old connection carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_keeps_open_streams() {
    let mesh = Mesh::start().await;
    let step = Duration::from_secs(5);

    // A bidi stream through caller -> echo over the current connection.
    let mut client = mesh.caller_echo().await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(echo("before")).await.expect("send");
    let mut stream = client
        .bidi_stream(ReceiverStream::new(rx))
        .await
        .expect("bidi")
        .into_inner();
    let first = tokio::time::timeout(step, stream.message()).await.expect("in time");
    assert_eq!(first.expect("item").expect("response").message, "before");

    // Rotate echo's certificate on disk.
    let old = tls::der_of(&mesh.certs.leaf_on_disk("echo").cert_pem);
    let rotated = mesh.certs.leaf("echo");
    rotated.write(&mesh.certs.paths, "echo").expect("write new leaf");
    let new = tls::der_of(&rotated.cert_pem);
    assert_ne!(old, new);

    // New connections see the new certificate once the sidecar polls.
    let caller = mesh.certs.leaf_on_disk("caller");
    let deadline = tokio::time::Instant::now() + step;
    loop {
        match tls::connect(mesh.echo_inbound, tls::client_config(Some(&caller))).await {
            Outcome::Accepted { server_cert } if server_cert == new => break,
            Outcome::Accepted { server_cert } => assert_eq!(server_cert, old, "neither old nor new"),
            Outcome::Refused(why) => panic!("refused during rotation: {why}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate not served after {step:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The stream opened before the rotation still works, both ways.
    tx.send(echo("after")).await.expect("send");
    let next = tokio::time::timeout(step, stream.message()).await.expect("in time");
    assert_eq!(next.expect("item").expect("response").message, "after");
    drop(tx);
    assert!(stream.next().await.is_none());
    assert!(stream.trailers().await.is_ok());

    // A garbage file is ignored: the new certificate stays in use.
    std::fs::write(mesh.certs.paths.leaf_cert("echo"), "not a certificate").expect("write garbage");
    // Checking that something does not happen needs a wait: three polls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcome = tls::connect(mesh.echo_inbound, tls::client_config(Some(&caller))).await;
    let Outcome::Accepted { server_cert } = outcome else {
        panic!("refused after a bad file: {outcome:?}")
    };
    assert_eq!(server_cert, new);
    mesh.shutdown().await;
}
