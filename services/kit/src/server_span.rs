//! The service side of tracing: a tower layer on the gRPC server that opens
//! a SERVER span for every call, as a child of the trace context in the
//! call's metadata (the sidecar's span; W3C, or B3 from outside), and keeps
//! it current while the handler runs, so [`propagate`](crate::propagate)
//! can pass it on to the calls the handler makes. The span ends when the
//! response stream ends, with the call's gRPC status.

use std::task::{Context, Poll};

use http::{Request, Response};
use meshwork_telemetry::{
    body::{End, ObservedBody, OnEnd},
    grpc_status, propagation,
};
use opentelemetry::trace::{Status, TraceContextExt};
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty, instrument::Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSpanLayer;

impl<S> Layer<S> for ServerSpanLayer {
    type Service = ServerSpan<S>;

    fn layer(&self, inner: S) -> ServerSpan<S> {
        ServerSpan { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ServerSpan<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for ServerSpan<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<ObservedBody<RB, SpanEnd>>;
    type Error = S::Error;
    type Future = ServerSpanFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let parent = propagation::extract(req.headers());
        let span = if is_probe(req.uri().path(), &parent) {
            Span::none()
        } else {
            let span = span_for(req.uri().path());
            // Fails only when no OpenTelemetry layer is installed (tests):
            // then there is nothing to link.
            let _ = span.set_parent(parent);
            span
        };
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ServerSpanFuture {
            inner: inner.instrument(span.clone()),
            span: Some(span),
        }
    }
}

/// A health check that is not part of a trace: the sidecar's readiness
/// probe, every second. Traced, it would bury the real traces in noise.
fn is_probe(path: &str, parent: &opentelemetry::Context) -> bool {
    path.starts_with("/grpc.health.v1.Health/") && !parent.span().span_context().is_valid()
}

/// `pkg.Service/Method` as the span's name, with the RPC attributes.
fn span_for(path: &str) -> Span {
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    tracing::info_span!(
        "grpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
    )
}

pin_project_lite::pin_project! {
    pub struct ServerSpanFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        span: Option<Span>,
    }
}

impl<F, RB, E> std::future::Future for ServerSpanFuture<F>
where
    F: std::future::Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<ObservedBody<RB, SpanEnd>>, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let span = this.span.take().unwrap_or_else(Span::none);
        Poll::Ready(result.map(|rsp| {
            let status = grpc_status::from_response_head(rsp.status(), rsp.headers());
            rsp.map(|body| ObservedBody::new(body, status, SpanEnd(span)))
        }))
    }
}

/// Ends the span (by dropping the last handle) with the call's status.
pub struct SpanEnd(Span);

impl OnEnd for SpanEnd {
    fn on_end(self, end: End) {
        self.0.record("rpc.grpc.status_code", i64::from(end.code));
        if grpc_status::is_server_error(end.code) {
            self.0.set_status(Status::error(grpc_status::name(end.code)));
        }
    }
}
