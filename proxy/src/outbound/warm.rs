//! Warming a new endpoint up: one health check through its stack as soon as
//! discovery adds it, so that its connection (TCP, TLS, HTTP/2) is
//! open before calls arrive and the first calls do not wait for it. (A call
//! that does wait is not measured by the balancer: a connection set-up
//! would read as a slow replica and starve a new one for seconds.) A failed
//! warm-up counts towards failure accrual like any failed call.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header::CONTENT_TYPE};
use tower::{Service, ServiceExt};

use super::replay::ReplayBody;
use crate::body::ProxyBody;

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// An empty `HealthCheckRequest` in its gRPC frame.
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

pub fn warm_up<S>(endpoint: S)
where
    S: Service<Request<ReplayBody>, Response = Response<ProxyBody>, Error = Infallible> + Send + 'static,
    S::Future: Send,
{
    let mut req = Request::new(ReplayBody::Buffered {
        data: Some(Bytes::from_static(EMPTY_MESSAGE)),
        trailers: None,
    });
    *req.method_mut() = Method::POST;
    *req.uri_mut() = http::Uri::from_static(HEALTH_CHECK);
    req.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    req.headers_mut().insert("te", HeaderValue::from_static("trailers"));
    tokio::spawn(async move {
        let _ = endpoint.oneshot(req).await;
    });
}
