//! The telemetry layer, the same on both sides: for each call it counts the
//! request, starts the sidecar's span as a child of the context the request
//! carries (W3C, or B3 from outside), puts the new span's context on the
//! request it passes on, and wraps the response body so that when the
//! response stream ends the span ends and the status, latency and access-log
//! line are recorded. Nothing is buffered and nothing is boxed.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use crate::body::RecvBody;
use http::{Request, Response};
use meshwork_telemetry::{
    body::{End, ObservedBody, OnEnd},
    grpc_status, propagation,
};
use opentelemetry::StringValue;
use tower::{Layer, Service};

use crate::outbound::Attempts;

use super::{
    Telemetry,
    access_log::Record,
    metrics::{CallLabels, CallSeries, Direction},
    span::{self, CallInfo},
};

/// Which side the layer is on, and for inbound, who is calling.
#[derive(Clone)]
enum Side {
    Outbound,
    Inbound {
        caller: &'static str,
        /// The caller's SPIFFE ID.
        identity: StringValue,
    },
}

#[derive(Clone)]
pub struct ObserveLayer {
    telemetry: Telemetry,
    side: Side,
}

impl ObserveLayer {
    pub fn outbound(telemetry: &Telemetry) -> Self {
        ObserveLayer {
            telemetry: telemetry.clone(),
            side: Side::Outbound,
        }
    }

    /// For one inbound connection from `caller` (a workload name) proven by
    /// `spiffe_id`. Shared rather than owned: every call's span carries it,
    /// and cloning an owned attribute value would copy the string per call.
    pub fn inbound(telemetry: &Telemetry, caller: &str, spiffe_id: Arc<str>) -> Self {
        ObserveLayer {
            side: Side::Inbound {
                caller: telemetry.0.names.workload(caller),
                identity: StringValue::from(spiffe_id),
            },
            telemetry: telemetry.clone(),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            telemetry: self.telemetry.clone(),
            side: self.side.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    telemetry: Telemetry,
    side: Side,
}

/// A response body as the telemetry layer passes it on.
pub type Observed<B> = ObservedBody<B, CallEnd>;

impl<S, B> Service<Request<RecvBody>> for Observe<S>
where
    S: Service<Request<RecvBody>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<Observed<B>>;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<RecvBody>) -> Self::Future {
        let shared = &self.telemetry.0;
        let method = shared.names.method(req.uri().path());
        let (direction, peer, peer_identity) = match &self.side {
            Side::Outbound => {
                let destination = shared.names.destination(req.uri());
                (Direction::Outbound, destination, StringValue::from(destination))
            }
            Side::Inbound { caller, identity } => (Direction::Inbound, *caller, identity.clone()),
        };
        let labels = CallLabels {
            direction,
            peer,
            method: method.full,
        };
        let series = shared.calls.request(labels);

        let parent = propagation::extract(req.headers());
        let call = CallInfo {
            direction,
            method,
            path: req.uri().path(),
            peer,
            peer_identity,
            local: shared.workload,
        };
        let span = span::start(&shared.tracer, call, &parent);
        // The next hop's parent is this span.
        propagation::set_trace_headers(span.span_context(), req.headers_mut());
        if direction == Direction::Outbound {
            propagation::remove_b3(req.headers_mut());
        }
        let end = CallEnd {
            telemetry: self.telemetry.clone(),
            series,
            span,
            start: Instant::now(),
            retries: 0,
        };
        ObserveFuture {
            inner: self.inner.call(req),
            pending: Pending(Some(end)),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        pending: Pending,
    }
}

/// A call whose response has not arrived yet; dropped unanswered (the
/// caller went away), it ends as CANCELLED.
pub struct Pending(Option<CallEnd>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(end) = self.0.take() {
            end.on_end(End {
                code: grpc_status::CANCELLED,
                bytes: 0,
            });
        }
    }
}

impl<F, B> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<Observed<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(rsp) = std::task::ready!(this.inner.poll(cx));
        let Some(mut end) = this.pending.0.take() else {
            // Polled again after it completed, which the Future contract
            // leaves open: never complete twice.
            return Poll::Pending;
        };
        // The retry layer below says how many attempts there were, when
        // more than one; the span and the access log report the retries.
        if let Some(Attempts(attempts)) = rsp.extensions().get::<Attempts>() {
            end.retries = attempts.saturating_sub(1);
        }
        let status = grpc_status::from_response_head(rsp.status(), rsp.headers());
        Poll::Ready(Ok(rsp.map(|body| ObservedBody::new(body, status, end))))
    }
}

/// Everything needed to record a call when it ends.
pub struct CallEnd {
    telemetry: Telemetry,
    series: Arc<CallSeries>,
    span: span::CallSpan,
    start: Instant,
    retries: u32,
}

impl OnEnd for CallEnd {
    fn on_end(self, end: End) {
        let elapsed = self.start.elapsed();
        let shared = &self.telemetry.0;
        self.series.response(end.code, elapsed.as_secs_f64());
        let (trace_id, span_id) = (self.span.span_context().trace_id(), self.span.span_context().span_id());
        self.span.finish(end.code, self.retries);
        if let Some(log) = &shared.access_log {
            // The wall-clock start, worked out only when a line is written:
            // with the log off, a call reads the clock once, not twice.
            let start = SystemTime::now().checked_sub(elapsed).unwrap_or(SystemTime::UNIX_EPOCH);
            log.record(Record {
                start,
                direction: self.series.labels.direction,
                peer: self.series.labels.peer,
                method: self.series.labels.method,
                grpc_status: end.code,
                duration: elapsed,
                trace_id,
                span_id,
                bytes: end.bytes,
                retries: self.retries,
            });
        }
    }
}
