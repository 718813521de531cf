//! Calls through a real sidecar pair: the app's h2c call enters the caller's
//! outbound sidecar, crosses mTLS to the echo service's inbound sidecar and
//! reaches the echo app. All four RPC kinds, metadata, trailers, streaming
//! without buffering, and the statuses the proxy answers itself.

use std::time::Duration;

use ::http::uri::PathAndQuery;
use futures::StreamExt;
use meshwork_proto::echo::{EchoRequest, EchoResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status, metadata::MetadataMap, transport::Channel};

use crate::support::{
    echo::{FAIL, FAIL_CODE, FAIL_MESSAGE, GATED},
    http,
    mesh::Mesh,
};

/// Long enough for anything on loopback; a hang fails instead of blocking.
const STEP: Duration = Duration::from_secs(5);

fn request<T>(message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("x-request-id", "req-42".parse().expect("value"));
    req.metadata_mut().insert("x-tenant", "acme".parse().expect("value"));
    req
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        repeat: 0,
        payload: vec![7; 32],
    }
}

fn assert_echoed_headers(metadata: &MetadataMap) {
    assert_eq!(
        metadata.get("x-request-id").map(|v| v.to_str().ok()),
        Some(Some("req-42"))
    );
    assert_eq!(metadata.get("x-tenant").map(|v| v.to_str().ok()), Some(Some("acme")));
}

fn assert_trailer(metadata: &MetadataMap) {
    assert_eq!(
        metadata.get("x-echo-trailer").map(|v| v.to_str().ok()),
        Some(Some("done")),
        "custom trailer missing from {metadata:?}"
    );
}

/// A server stream of `repeat` gated messages: the app sends each after the
/// test lets it through (`mesh.echo.gate`).
async fn gated_stream(mesh: &Mesh, repeat: u32) -> tonic::Streaming<EchoResponse> {
    let req = EchoRequest {
        message: GATED.into(),
        repeat,
        payload: Vec::new(),
    };
    mesh.caller_echo()
        .await
        .server_stream(request(req))
        .await
        .expect("server stream")
        .into_inner()
}

/// A unary call to any path, with an echo request as the body.
async fn call_path(channel: Channel, path: &'static str) -> Result<EchoResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
    grpc.unary(
        Request::new(echo("x")),
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_with_metadata_and_trailers() {
    let mesh = Mesh::start().await;
    let mut client = mesh.caller_echo().await;
    let rsp = client.unary(request(echo("hello"))).await.expect("unary");
    // tonic merges a unary call's trailers into its metadata.
    assert_echoed_headers(rsp.metadata());
    assert_trailer(rsp.metadata());
    assert_eq!(rsp.get_ref().message, "hello");
    assert_eq!(rsp.get_ref().payload, vec![7; 32]);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming() {
    let mesh = Mesh::start().await;
    let mut client = mesh.caller_echo().await;
    let messages: Vec<_> = (0..20).map(|i| echo(&format!("m{i}"))).collect();
    let rsp = client
        .client_stream(request(futures::stream::iter(messages)))
        .await
        .expect("client stream");
    assert_echoed_headers(rsp.metadata());
    assert_trailer(rsp.metadata());
    let want: Vec<_> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(rsp.get_ref().message, format!("{} (640 bytes)", want.join(",")));
    assert_eq!(rsp.get_ref().index, 20);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_many_messages() {
    let mesh = Mesh::start().await;
    let mut client = mesh.caller_echo().await;
    let req = EchoRequest {
        message: "s".into(),
        repeat: 1000,
        payload: vec![1; 100],
    };
    let rsp = client.server_stream(request(req)).await.expect("server stream");
    assert_echoed_headers(rsp.metadata());
    let mut stream = rsp.into_inner();
    let mut count = 0;
    while let Some(item) = tokio::time::timeout(STEP, stream.message())
        .await
        .expect("in time")
        .expect("item")
    {
        assert_eq!(item.index, count);
        assert_eq!(item.message, format!("s#{count}"));
        count += 1;
    }
    assert_eq!(count, 1000);
    let trailers = stream.trailers().await.expect("status ok").expect("trailers");
    assert_trailer(&trailers);
    mesh.shutdown().await;
}

/// The app sends response n+1 only after the test has received response n:
/// if either sidecar buffered the stream, the first message would never
/// arrive and this test would time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_is_not_buffered() {
    let mesh = Mesh::start().await;
    let mut stream = gated_stream(&mesh, 50).await;
    for index in 0..50 {
        let item = tokio::time::timeout(STEP, stream.message())
            .await
            .unwrap_or_else(|_| panic!("message {index} did not arrive: buffered?"))
            .expect("item")
            .expect("not the end yet");
        assert_eq!(item.index, index);
        // Let the app produce the next one.
        mesh.echo.gate.add_permits(1);
    }
    assert!(stream.message().await.expect("clean end").is_none());
    mesh.shutdown().await;
}

/// Bidirectional ping-pong: each response must arrive before the next
/// request is sent, in both directions through both sidecars.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_streaming_ping_pong() {
    let mesh = Mesh::start().await;
    let mut client = mesh.caller_echo().await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(echo("ping 0")).await.expect("send");
    let rsp = client
        .bidi_stream(request(ReceiverStream::new(rx)))
        .await
        .expect("bidi");
    assert_echoed_headers(rsp.metadata());
    let mut stream = rsp.into_inner();
    for i in 0..30u32 {
        let item = tokio::time::timeout(STEP, stream.message())
            .await
            .expect("in time")
            .expect("item")
            .expect("response");
        assert_eq!((item.index, item.message.as_str()), (i, format!("ping {i}").as_str()));
        if i < 29 {
            tx.send(echo(&format!("ping {}", i + 1))).await.expect("send");
        }
    }
    drop(tx);
    assert!(stream.next().await.is_none());
    let trailers = stream.trailers().await.expect("status ok").expect("trailers");
    assert_trailer(&trailers);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_error_status_passes_through_unchanged() {
    let mesh = Mesh::start().await;
    let mut client = mesh.caller_echo().await;
    let status = client
        .unary(request(echo(FAIL)))
        .await
        .expect_err("the app fails the call");
    assert_eq!(status.code(), FAIL_CODE);
    assert_eq!(status.message(), FAIL_MESSAGE);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_grpc_service_is_unimplemented() {
    let mesh = Mesh::start().await;
    let status = call_path(mesh.caller_channel().await, "/shop.cart.v1.CartService/GetCart")
        .await
        .expect_err("no such destination");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert_eq!(
        status.message(),
        "no mesh service serves 'shop.cart.v1.CartService' (path /shop.cart.v1.CartService/GetCart)"
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_down_is_unavailable_naming_it() {
    let mesh = Mesh::start().await;
    let status = call_path(mesh.caller_channel().await, "/shop.users.v1.UserService/GetUser")
        .await
        .expect_err("nobody listens");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        format!("down ({}) is unavailable: connection refused", mesh.down_inbound)
    );
    // The caller's sidecar stays healthy and keeps serving other calls.
    let mut client = mesh.caller_echo().await;
    client.unary(request(echo("still here"))).await.expect("unary");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_down_is_unavailable_and_not_ready() {
    let mesh = Mesh::start().await;
    let status = call_path(mesh.caller_channel().await, "/shop.payments.v1.PaymentService/Charge")
        .await
        .expect_err("idle has no app");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        format!("idle app ({}) is unavailable: connection refused", mesh.idle_app)
    );
    let (code, body) = http::get(mesh.idle_admin, "/ready").await.expect("ready");
    assert_eq!(code, 503);
    assert!(body.contains(&format!("idle app at {}", mesh.idle_app)), "{body}");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let mesh = Mesh::start().await;
    assert_eq!(
        http::get(mesh.echo_admin, "/live").await.expect("live"),
        (200, "live\n".into())
    );
    assert_eq!(http::get(mesh.echo_admin, "/ready").await.expect("ready").0, 200);
    assert_eq!(http::get(mesh.echo_admin, "/metrics").await.expect("metrics").0, 200);
    assert_eq!(http::get(mesh.echo_admin, "/nope").await.expect("404").0, 404);
    mesh.shutdown().await;
}

/// Shutdown drains: a stream in flight when the sidecars are told to stop
/// still completes, and the sidecars then return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_streams() {
    let mesh = Mesh::start().await;
    let mut stream = gated_stream(&mesh, 3).await;
    let first = tokio::time::timeout(STEP, stream.message()).await.expect("in time");
    assert_eq!(first.expect("item").expect("first").index, 0);
    let gate = mesh.echo.gate.clone();
    let admin = mesh.echo_admin;
    let stopping = tokio::spawn(mesh.shutdown());
    // Once /ready stops answering 200 the sidecars are draining; then let
    // the app finish the stream.
    let deadline = tokio::time::Instant::now() + STEP;
    while matches!(http::get(admin, "/ready").await, Ok((200, _))) {
        assert!(tokio::time::Instant::now() < deadline, "sidecar did not start draining");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.add_permits(2);
    let mut rest = Vec::new();
    while let Some(item) = tokio::time::timeout(STEP, stream.message())
        .await
        .expect("in time")
        .expect("item")
    {
        rest.push(item.index);
    }
    assert_eq!(rest, [1, 2]);
    tokio::time::timeout(STEP, stopping)
        .await
        .expect("stopped")
        .expect("clean");
}
