//! Carries the trace context onto the calls a service makes while handling a
//! request, so that a checkout through the mesh is one connected trace: the sidecar
//! cannot link an app's inbound and outbound calls by itself. The parent of an
//! outgoing call is the current span (the server span of the call being handled, see
//! [`ServerSpanLayer`](crate::ServerSpanLayer)); `baggage` is passed on as it came.

use meshwork_telemetry::propagation::{self, BAGGAGE};
use opentelemetry::trace::TraceContextExt;
use tonic::{Request, metadata::MetadataMap};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace-context headers (and baggage) forwarded from inbound to outbound.
pub const TRACE_HEADERS: &[&str] = &["traceparent", "tracestate", "baggage"];

/// A request for a peer carrying `message`, the current span as its trace parent and
/// the baggage of `inbound`. Without a current span (tracing not set up) the trace
/// headers of `inbound` are copied as they are.
pub fn outbound<T>(inbound: &MetadataMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let context = tracing::Span::current().context();
    let span = context.span();
    let metadata = request.metadata_mut();
    if span.span_context().is_valid() {
        propagation::set_trace_headers(span.span_context(), metadata.as_mut());
        if let Some(baggage) = inbound.get(BAGGAGE) {
            metadata.insert(BAGGAGE, baggage.clone());
        }
    } else {
        for name in TRACE_HEADERS {
            if let Some(value) = inbound.get(*name) {
                metadata.insert(*name, value.clone());
            }
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_trace_headers_only_without_a_span() {
        let mut inbound = MetadataMap::new();
        inbound.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("value"),
        );
        inbound.insert("authorization", "Bearer secret".parse().expect("value"));
        let out = outbound(&inbound, ());
        assert_eq!(out.metadata().get("traceparent"), inbound.get("traceparent"));
        assert!(out.metadata().get("authorization").is_none());
        assert!(out.metadata().get("baggage").is_none());
    }
}

#[cfg(test)]
mod with_a_span {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::prelude::*;

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn the_current_span_is_the_parent() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let mut inbound = MetadataMap::new();
            inbound.insert(
                "traceparent",
                format!("00-{TRACE}-00f067aa0ba902b7-01").parse().expect("value"),
            );
            inbound.insert("baggage", "user=ada".parse().expect("value"));
            let span = tracing::info_span!("handler");
            let headers = inbound.clone().into_headers();
            span.set_parent(propagation::extract(&headers)).expect("parent");
            let out = span.in_scope(|| outbound(&inbound, ()));
            let traceparent = out.metadata().get("traceparent").expect("traceparent");
            let traceparent = traceparent.to_str().expect("text");
            assert!(traceparent.starts_with(&format!("00-{TRACE}-")), "{traceparent}");
            assert!(
                !traceparent.contains("00f067aa0ba902b7"),
                "the parent is the handler's span"
            );
            assert_eq!(
                out.metadata().get("baggage").map(|v| v.to_str().ok()),
                Some(Some("user=ada"))
            );
        });
    }
}
