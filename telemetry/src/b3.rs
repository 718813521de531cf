//! Reading Zipkin's B3 trace headers, which callers from outside the mesh
//! may send instead of W3C `traceparent`. Written by hand rather than taken
//! from `opentelemetry-zipkin`, which would bring an HTTP client and the
//! whole Zipkin exporter for a few lines of parsing. Only extraction: the
//! mesh itself speaks W3C.
//!
//! Single header: `b3: {trace}-{span}[-{sampled}[-{parent}]]` (a bare `0`,
//! `1` or `d` carries only a sampling decision, no context). Multi-header:
//! `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, `X-B3-Flags`.

use http::{HeaderMap, HeaderName};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// Every B3 header name, lower case as HTTP/2 carries them.
pub const HEADERS: &[&str] = &[
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// Whether `name` is one of the B3 headers.
pub fn is_b3(name: &HeaderName) -> bool {
    let name = name.as_str();
    name == "b3" || name.starts_with("x-b3-")
}

/// The first names [`extract`] looks for, parsed once (it runs for every
/// call without `traceparent`).
const SINGLE: HeaderName = HeaderName::from_static("b3");
const TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");

/// The remote span context in the B3 headers, if they carry a valid one.
pub fn extract(headers: &HeaderMap) -> Option<SpanContext> {
    let get = |name: &str| headers.get(name).and_then(text);
    if let Some(single) = headers.get(SINGLE).and_then(text) {
        return single_header(single);
    }
    let trace = headers.get(TRACE_ID).and_then(text)?;
    let span = get("x-b3-spanid")?;
    // Debug (`X-B3-Flags: 1`) implies sampled; no decision means "sample".
    let sampled = get("x-b3-flags") == Some("1") || !matches!(get("x-b3-sampled"), Some("0" | "false"));
    context(trace, span, sampled)
}

fn text(value: &http::HeaderValue) -> Option<&str> {
    value.to_str().ok().map(str::trim)
}

fn single_header(value: &str) -> Option<SpanContext> {
    let mut parts = value.split('-');
    let trace = parts.next()?;
    let span = parts.next()?;
    let sampled = !matches!(parts.next(), Some("0"));
    context(trace, span, sampled)
}

fn context(trace: &str, span: &str, sampled: bool) -> Option<SpanContext> {
    // 64-bit trace ids are the low half of a 128-bit one.
    let trace_id = match trace.len() {
        16 => u64::from_str_radix(trace, 16)
            .ok()
            .map(|low| TraceId::from(u128::from(low))),
        32 => TraceId::from_hex(trace).ok(),
        _ => None,
    }?;
    let span_id = if span.len() == 16 {
        SpanId::from_hex(span).ok()
    } else {
        None
    }?;
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn single_header_forms() {
        let sc = extract(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]))
        .expect("context");
        assert_eq!(sc.trace_id().to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(sc.span_id().to_string(), "e457b5a2e4d86bd1");
        assert!(sc.is_sampled());
        let unsampled = extract(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0",
        )]))
        .expect("context");
        assert!(!unsampled.is_sampled());
        let short = extract(&headers(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7")])).expect("context");
        assert_eq!(short.trace_id().to_string(), "0000000000000000a3ce929d0e0e4736");
        assert!(short.is_sampled());
    }

    #[test]
    fn multi_header_form() {
        let sc = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]))
        .expect("context");
        assert_eq!(sc.trace_id().to_string(), "463ac35c9f6413ad48485a3953bb6124");
        assert!(sc.is_sampled(), "debug implies sampled");
    }

    #[test]
    fn refuses_what_carries_no_context() {
        for bad in ["0", "1", "d", "xyz-abc", "80f198ee56343ba864fe8b2a57d3eff7-short", ""] {
            assert!(extract(&headers(&[("b3", bad)])).is_none(), "{bad}");
        }
        assert!(extract(&headers(&[("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124")])).is_none());
        let zeros = "00000000000000000000000000000000-0000000000000000";
        assert!(extract(&headers(&[("b3", zeros)])).is_none());
    }
}
