//! gRPC and gRPC-Web from outside the mesh, passed through to the method:
//! the frames and trailers travel unchanged (never buffered), and only the
//! headers are the gateway's business: the caller is checked, the token is
//! dropped (it never enters the mesh), and the verified user and the trace
//! context are set. gRPC-Web is translated by tonic-web around the same
//! path, so both share every rule.

use std::{net::IpAddr, sync::Arc, time::Instant};

use http::{HeaderValue, Request, Response, header};
use meshwork_telemetry::body::{End, ObservedBody, OnEnd};
use tonic::{Status, body::Body};
use tower::{Layer, Service, ServiceExt};

use crate::{
    access_log::Line,
    caller,
    edge::Shared,
    metrics::{HttpStatus, RequestLabels},
    status::grpc_error,
    upstream,
};

/// Native gRPC (`application/grpc`, HTTP/2).
pub async fn serve<B>(
    shared: Arc<Shared>,
    request: Request<B>,
    trace: opentelemetry::Context,
    client: IpAddr,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    forward(shared, request.map(Body::new), trace, "grpc", client).await
}

/// gRPC-Web, binary or text, over HTTP/1.1 or HTTP/2.
pub async fn serve_web<B>(
    shared: Arc<Shared>,
    request: Request<B>,
    trace: opentelemetry::Context,
    client: IpAddr,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    let inner = tower::service_fn(move |request: Request<Body>| {
        let (shared, trace) = (shared.clone(), trace.clone());
        async move { Ok::<_, std::convert::Infallible>(forward(shared, request, trace, "grpc-web", client).await) }
    });
    let mut web = tonic_web::GrpcWebLayer::new().layer(inner);
    // tonic-web decodes a gRPC-Web-text body (base64) but passes on the
    // encoded body's exact size, which the HTTP/2 client would then send
    // as a content-length the decoded body does not have: hide it.
    let request = request.map(|body| http_body_util::StreamBody::new(http_body_util::BodyStream::new(body)));
    match ServiceExt::oneshot(&mut web, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn forward(
    shared: Arc<Shared>,
    request: Request<Body>,
    trace: opentelemetry::Context,
    protocol: &'static str,
    client: IpAddr,
) -> Response<Body> {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let catalog = shared.catalog.load_full();
    let mut finish = Finish {
        shared: shared.clone(),
        protocol,
        rpc: None,
        started,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        user: None,
        trace_id: crate::edge::trace_id(&trace),
    };
    let Some(method) = catalog.method(parts.uri.path()) else {
        let status = Status::unimplemented(format!("the gateway publishes no method {}", parts.uri.path()));
        return finish.now(grpc_error(&status));
    };
    finish.rpc = Some(method.label.clone());
    let principal = match caller::authorize(&shared.auth, method, &parts.headers).await {
        Ok(principal) => principal,
        Err(refusal) => {
            shared.metrics.auth_failure(refusal.reason());
            let mut response: Response<Body> = grpc_error(&refusal.status());
            if let Some(challenge) = refusal.challenge().and_then(|c| HeaderValue::from_str(c).ok()) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
            }
            return finish.now(response);
        }
    };
    finish.user = principal.as_ref().map(|p| p.user_id.clone());
    let limit = shared
        .rate_limits
        .check(method, principal.as_ref(), client, &parts.headers)
        .await;
    if let Some(status) = limit.refusal() {
        let mut response: Response<Body> = grpc_error(&status);
        limit.write_headers(response.headers_mut());
        return finish.now(response);
    }
    // The token proved who calls; inside the mesh the caller is the
    // gateway's identity and the user is the header set below.
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.remove(header::COOKIE);
    // HTTP/1.1's connection headers mean nothing on the HTTP/2 hop (h2
    // refuses them), and a gRPC-Web-text body's length changes once decoded.
    for hop in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::CONTENT_LENGTH,
        header::HOST,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
    ] {
        parts.headers.remove(hop);
    }
    parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
    let trace = shared
        .preferences
        .with_user_context(&trace, principal.as_ref(), parts.uri.path())
        .await;
    upstream::into_mesh(&mut parts.headers, principal.as_ref(), &trace);
    let timeout = upstream::deadline(&parts.headers, shared.limits.request_timeout);
    if let Ok(value) = HeaderValue::from_str(&format!("{}m", timeout.as_millis())) {
        parts.headers.insert("grpc-timeout", value);
    }
    let (parts, body) = match shared.cache.ttl_for(method) {
        Some(ttl) => {
            match crate::cache::grpc::serve(&shared, method, parts, body, ttl, principal.as_ref(), &trace).await {
                crate::cache::grpc::Outcome::Answered(mut response) => {
                    limit.write_headers(response.headers_mut());
                    return finish.now(response);
                }
                crate::cache::grpc::Outcome::Forward(parts, body) => (parts, body),
            }
        }
        None => (parts, body),
    };
    let mut channel = shared.channel.clone();
    let response = match channel.ready().await {
        Ok(channel) => channel.call(Request::from_parts(parts, body)).await,
        Err(e) => Err(e),
    };
    match response {
        Ok(mut response) => {
            // The method has its request: whatever it wrote is seen by the
            // caller's next cached read.
            shared.cache.wrote(method, principal.as_ref());
            limit.write_headers(response.headers_mut());
            let status = meshwork_telemetry::grpc_status::from_response_head(response.status(), response.headers());
            response.map(|body| Body::new(ObservedBody::new(body, status, finish)))
        }
        Err(e) => finish.now(grpc_error(&Status::unavailable(format!(
            "the call through the gateway's sidecar failed: {}",
            causes(&e)
        )))),
    }
}

/// Records the call (metrics and access log) when its response ends.
struct Finish {
    shared: Arc<Shared>,
    protocol: &'static str,
    rpc: Option<Arc<str>>,
    started: Instant,
    method: String,
    path: String,
    user: Option<String>,
    trace_id: String,
}

impl Finish {
    /// For a response decided here, in its head.
    fn now(self, response: Response<Body>) -> Response<Body> {
        let code =
            meshwork_telemetry::grpc_status::from_response_head(response.status(), response.headers()).unwrap_or(0);
        self.on_end(End { code, bytes: 0 });
        response
    }
}

impl OnEnd for Finish {
    fn on_end(self, end: End) {
        let took = self.started.elapsed();
        let grpc_status = meshwork_telemetry::grpc_status::label(end.code);
        let rpc = self.rpc.clone().unwrap_or_else(|| Arc::from("none"));
        self.shared.metrics.request(
            RequestLabels {
                protocol: self.protocol,
                rpc: crate::metrics::Shared(rpc.clone()),
                http_status: HttpStatus(200),
                grpc_status,
            },
            took,
        );
        self.shared.log.write(Line {
            time: std::time::SystemTime::now() - took,
            protocol: self.protocol,
            method: self.method,
            path: self.path,
            route: None,
            rpc: self.rpc,
            status: 200,
            grpc_status: Some(meshwork_telemetry::grpc_status::name(end.code)),
            duration_ms: took.as_secs_f64() * 1000.0,
            user: self.user,
            trace_id: self.trace_id,
        });
    }
}

/// An error and its causes on one line: tonic's transport error alone says
/// only "transport error".
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
