//! Carries the caller's trace context onto the calls a service makes while handling a
//! request, so that a checkout through the mesh is one connected trace: the sidecar
//! cannot link an app's inbound and outbound calls by itself.

use tonic::{Request, metadata::MetadataMap};

/// The W3C trace-context headers (and baggage) forwarded from inbound to outbound.
pub const TRACE_HEADERS: &[&str] = &["traceparent", "tracestate", "baggage"];

/// A request for a peer carrying `message` and the trace headers of `inbound`.
pub fn outbound<T>(inbound: &MetadataMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    for name in TRACE_HEADERS {
        if let Some(value) = inbound.get(*name) {
            request.metadata_mut().insert(*name, value.clone());
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_trace_headers_only() {
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
