//! Serves on a real loopback socket and checks health, reflection (v1 and v1alpha),
//! NOT_SERVING on shutdown, the address-in-use error, and a connection that
//! outlives bursts of cancelled calls.

use std::time::Duration;

use meshwork_service_kit::{ServeError, bind, serve_on};
use tokio::sync::oneshot;
use tonic::service::Routes;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::{v1, v1alpha};

const SERVICE: &str = "shop.users.v1.UserService";

#[tokio::test]
async fn serves_health_and_reflection_then_shuts_down() {
    let listener = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");

    // A second bind of the same address names it.
    let err = bind(addr).await.expect_err("in use");
    assert!(matches!(err, ServeError::AddrInUse { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");

    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(listener, Routes::default(), &[SERVICE], async {
        let _ = stopped.await;
    }));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for name in ["", SERVICE] {
        let status = health
            .check(HealthCheckRequest { service: name.into() })
            .await
            .expect("check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {name:?}");
    }

    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.message().await.expect("message").expect("one response");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = response.message_response
    else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == SERVICE), "{names:?}");
    assert!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "shop.cart.v1.CartService"),
        "only what is served: {names:?}"
    );

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(SERVICE.into())),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha")
        .into_inner();
    let response = responses.message().await.expect("message").expect("one response");
    assert!(
        matches!(
            response.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "{response:?}"
    );
    drop(responses);

    // Watch health, stop the server, and see NOT_SERVING before it goes away.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("watch message").expect("first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    stop.send(()).expect("server still running");
    let next = watch.message().await.expect("watch message").expect("second status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    drop(reflection);
    drop(alpha);
    drop(health);
    drop(channel);

    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .expect("task")
        .expect("clean shutdown");
}

/// The sidecar passes its callers' cancellations on as they come, so a burst
/// of calls whose deadlines passed in flight reaches the service as streams
/// reset before it has taken them. The connection must survive it (h2's
/// default bound of 20 closed it with GOAWAY).
#[tokio::test]
async fn a_burst_of_calls_cancelled_as_they_arrive_leaves_the_connection_open() {
    let listener = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, Routes::default(), &[SERVICE], async {
        let _ = stopped.await;
    }));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    let check = || {
        http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request")
    };
    // Queued together, so they leave in one write.
    for _ in 0..200 {
        let (_response, mut body) = send.send_request(check(), false).expect("send");
        body.send_reset(h2::Reason::CANCEL);
    }
    // An empty HealthCheckRequest: no compression, length 0.
    let (response, mut body) = send.send_request(check(), false).expect("send");
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("body");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered in time")
        .expect("the connection still carries calls");
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let _ = body.flow_control().release_capacity(data.expect("data").len());
    }
    let trailers = body.trailers().await.expect("trailers").expect("grpc-status");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
}
