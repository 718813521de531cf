//! The gateway's request path, top to bottom on one screen: every request
//! gets its span (the root of its trace, or a child of the caller's W3C
//! context), CORS is answered at the edge, and the request goes to its
//! front end by what it is: gRPC-Web, gRPC, REST, or the storefront's
//! files. REST requests are counted and logged here; gRPC ones when their
//! response stream ends.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use arc_swap::ArcSwap;
use http::{Request, Response, header};
use hyper::body::Incoming;
use meshwork_config::Limits;
use opentelemetry::trace::TraceContextExt;
use tonic::{Code, body::Body, transport::Channel};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    access_log::{AccessLog, Line},
    auth::Authenticator,
    cache::ResponseCache,
    catalog::{Catalog, Published},
    grpc,
    limit::RateLimits,
    metrics::{HttpStatus, Metrics, RequestLabels},
    rest, storefront,
};

/// What every request may need, shared by all connections.
pub struct Shared {
    /// The published methods and REST routes; replaced when the mesh changes.
    pub catalog: ArcSwap<Catalog>,
    pub auth: Authenticator,
    /// HTTP/2 to the gateway's sidecar.
    pub channel: Channel,
    pub limits: Limits,
    pub metrics: Metrics,
    pub log: AccessLog,
    /// Users' locale and currency, for the baggage of their calls.
    pub preferences: crate::upstream::Preferences,
    /// `/mcp`, unless `[gateway.mcp] enabled = false`.
    pub mcp: Option<crate::mcp::Endpoint>,
    /// `[[gateway.rate_limits]]`, asked by every front end after the caller is known.
    pub rate_limits: Arc<RateLimits>,
    /// `[[gateway.cache]]`.
    pub cache: ResponseCache,
}

/// What a REST request came to, for its metrics and log line.
#[derive(Default)]
pub struct Outcome {
    pub route: Option<String>,
    pub rpc: Option<Arc<Published>>,
    pub user: Option<String>,
    /// The gRPC status of a call that failed.
    pub grpc: Option<Code>,
}

/// One request, whatever its protocol.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    // Outside context is a parent for our span, no more: baggage from
    // outside never counts (the upstream module drops it).
    let parent = meshwork_telemetry::propagation::extract(request.headers());
    let span = tracing::info_span!(
        "gateway",
        otel.name = %format!("{} {}", request.method(), request.uri().path()),
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(parent);
    let trace = span.context();
    let response = dispatch(shared, request, trace, peer).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    Ok(response)
}

async fn dispatch(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    trace: opentelemetry::Context,
    peer: SocketAddr,
) -> Response<Body> {
    // The client's address counts for rate limits keyed by client.
    let client = peer.ip();
    match Kind::of(&request) {
        Kind::GrpcWeb => grpc::serve_web(shared, request, trace, client).await,
        Kind::Grpc => grpc::serve(shared, request, trace, client).await,
        Kind::Storefront => storefront::serve(&request),
        Kind::Mcp => crate::mcp::serve(shared, request, trace, client).await,
        Kind::OAuth => crate::oauth::serve(&shared, request).await,
        Kind::Rest => {
            let started = Instant::now();
            let (method, path) = (request.method().to_string(), request.uri().path().to_string());
            let mut outcome = Outcome::default();
            let response = rest::serve(&shared, request, &trace, &mut outcome, client).await;
            record_rest(&shared, &outcome, &response, started, method, path, &trace);
            response
        }
    }
}

/// Which front end a request is for.
enum Kind {
    GrpcWeb,
    Grpc,
    Rest,
    Storefront,
    Mcp,
    OAuth,
}

impl Kind {
    fn of<B>(request: &Request<B>) -> Kind {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("application/grpc-web") {
            Kind::GrpcWeb
        } else if content_type.starts_with("application/grpc") {
            Kind::Grpc
        } else if crate::mcp::serves(request.uri().path()) {
            Kind::Mcp
        } else if crate::oauth::serves(request.uri().path()) {
            Kind::OAuth
        } else if storefront::serves(request.method(), request.uri().path()) {
            Kind::Storefront
        } else {
            Kind::Rest
        }
    }
}

fn record_rest(
    shared: &Shared,
    outcome: &Outcome,
    response: &Response<Body>,
    started: Instant,
    method: String,
    path: String,
    trace: &opentelemetry::Context,
) {
    let took = started.elapsed();
    let status = response.status().as_u16();
    let code = outcome.grpc.map(|c| c as u8).unwrap_or(0);
    let rpc: Arc<str> = outcome
        .rpc
        .as_ref()
        .map_or_else(|| Arc::from("none"), |m| m.label.clone());
    shared.metrics.request(
        RequestLabels {
            protocol: "rest",
            rpc: crate::metrics::Shared(rpc.clone()),
            http_status: HttpStatus(status),
            grpc_status: meshwork_telemetry::grpc_status::label(code),
        },
        took,
    );
    shared.log.write(Line {
        time: SystemTime::now() - took,
        protocol: "rest",
        method,
        path,
        route: outcome.route.clone(),
        rpc: outcome.rpc.as_ref().map(|_| rpc),
        status,
        grpc_status: outcome.grpc.map(|c| meshwork_telemetry::grpc_status::name(c as u8)),
        duration_ms: took.as_secs_f64() * 1000.0,
        user: outcome.user.clone(),
        trace_id: trace_id(trace),
    });
}

/// The trace id as 32 hex digits, for the access log.
pub fn trace_id(trace: &opentelemetry::Context) -> String {
    trace.span().span_context().trace_id().to_string()
}
