//! Trace context on the wire. Meshwork speaks W3C Trace Context
//! (`traceparent`, `tracestate`) and passes `baggage` on; from outside the
//! mesh it also accepts B3 (Zipkin's single `b3` header or the multi-header
//! `X-B3-*` form), used only when there is no valid `traceparent`.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator},
    trace::{SpanContext, TraceContextExt},
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

use crate::b3;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const BAGGAGE: &str = "baggage";

// The same names parsed once: a lookup by `&str` parses the name on every
// call, and the proxy looks these up on every request.
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_HEADER: HeaderName = HeaderName::from_static(TRACESTATE);

/// Reads header values for a propagator.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = match key {
            TRACEPARENT => self.0.get(TRACEPARENT_HEADER),
            TRACESTATE => self.0.get(TRACESTATE_HEADER),
            _ => self.0.get(key),
        };
        value.and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes header values for a propagator (values that are not valid header
/// text are skipped).
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// W3C Trace Context and Baggage together: what Meshwork injects.
pub fn composite() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// The caller's span context from `headers`: W3C if present and valid, else
/// B3 (single header, then multi-header). An empty context if neither.
pub fn extract(headers: &HeaderMap) -> Context {
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        return cx;
    }
    match b3::extract(headers) {
        Some(span_context) => Context::new().with_remote_span_context(span_context),
        None => cx,
    }
}

/// Injects `cx`'s span context and baggage (the composite propagator).
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    composite().inject_context(cx, &mut HeaderInjector(headers));
}

/// Sets `traceparent` (and `tracestate` when there is one) to `span`, the
/// quick way for the proxy's hot path: one small buffer, no propagator.
/// `baggage` is left as it is, to pass on untouched.
pub fn set_trace_headers(span: &SpanContext, headers: &mut HeaderMap) {
    if !span.is_valid() {
        return;
    }
    // Owned by a `Bytes` of its own, one allocation whose clones only
    // count references: copied into a `Vec` instead, the first clone of
    // the headers (the retry layer keeps them for another attempt) would
    // allocate again.
    if let Ok(mut value) = HeaderValue::from_maybe_shared(Bytes::from_owner(traceparent(span))) {
        // Sent as "never indexed" in HPACK: a value unique to each call
        // would only churn both ends' dynamic tables, evicting the headers
        // that do repeat (content type, user agent, authority).
        value.set_sensitive(true);
        headers.insert(TRACEPARENT_HEADER, value);
    }
    let state = span.trace_state().header();
    if state.is_empty() {
        headers.remove(TRACESTATE_HEADER);
    } else if let Ok(value) = HeaderValue::try_from(state) {
        headers.insert(TRACESTATE_HEADER, value);
    }
}

/// `00-{trace id}-{span id}-{flags}` in lower-case hex, 55 bytes. Written
/// into a buffer on the stack: `format!` grew a string piece by piece and
/// went through the formatting machinery on every call.
fn traceparent(span: &SpanContext) -> [u8; 55] {
    fn hex(bytes: &[u8], out: &mut [u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
    }
    let mut out = [b'-'; 55];
    out[..2].copy_from_slice(b"00");
    hex(&span.trace_id().to_bytes(), &mut out[3..35]);
    hex(&span.span_id().to_bytes(), &mut out[36..52]);
    hex(&[span.trace_flags().to_u8() & 1], &mut out[53..55]);
    out
}

/// Removes B3 headers: once a call carries `traceparent`, stale B3 headers
/// naming an older parent would only confuse whoever reads them next.
pub fn remove_b3(headers: &mut HeaderMap) {
    // Few calls carry B3: one pass over the names finds out, where removing
    // each of the six names would be six lookups on every call.
    if !headers.keys().any(b3::is_b3) {
        return;
    }
    for name in b3::HEADERS {
        headers.remove(*name);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn b3_headers_are_removed_and_nothing_else() {
        let mut h = headers(&[
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
            ("x-b3ish", "kept: not a B3 name"),
            ("content-type", "application/grpc"),
        ]);
        remove_b3(&mut h);
        let mut left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-b3ish"]);

        let mut plain = headers(&[("content-type", "application/grpc"), ("te", "trailers")]);
        remove_b3(&mut plain);
        assert_eq!(plain.len(), 2);
    }

    #[test]
    fn w3c_wins_over_b3() {
        let h = headers(&[
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]);
        let cx = extract(&h);
        assert_eq!(cx.span().span_context().trace_id().to_string(), TRACE);
    }

    #[test]
    fn b3_when_no_traceparent() {
        let cx = extract(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        )]));
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(sc.span_id().to_string(), "e457b5a2e4d86bd1");
        assert!(sc.is_sampled() && sc.is_remote());
    }

    #[test]
    fn nothing_gives_an_empty_context() {
        assert!(!extract(&HeaderMap::new()).span().span_context().is_valid());
        let bad = headers(&[("traceparent", "00-zz-yy-01")]);
        assert!(!extract(&bad).span().span_context().is_valid());
    }

    #[test]
    fn sets_traceparent_and_tracestate() {
        let sc = SpanContext::new(
            TraceId::from_hex(TRACE).expect("id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("id"),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("k", "v")]).expect("state"),
        );
        let mut h = headers(&[("tracestate", "old=1"), ("baggage", "user=ada")]);
        set_trace_headers(&sc, &mut h);
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(
            h["traceparent"].is_sensitive(),
            "never indexed in HPACK: unique per call"
        );
        assert_eq!(h["tracestate"], "k=v");
        assert_eq!(h["baggage"], "user=ada");
        // What we write, we read back.
        assert_eq!(extract(&h).span().span_context().span_id(), sc.span_id());
    }

    #[test]
    fn an_unsampled_span_says_so_in_its_traceparent() {
        let sc = SpanContext::new(
            TraceId::from_hex("000000000000000000000000000000a1").expect("id"),
            SpanId::from_hex("00000000000000b2").expect("id"),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        let mut h = HeaderMap::new();
        set_trace_headers(&sc, &mut h);
        assert_eq!(
            h["traceparent"],
            "00-000000000000000000000000000000a1-00000000000000b2-00"
        );
        assert!(h.get("tracestate").is_none());
    }

    #[test]
    fn composite_injects_trace_and_baggage() {
        use opentelemetry::{KeyValue, baggage::BaggageExt};
        let sc = SpanContext::new(
            TraceId::from_hex(TRACE).expect("id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new()
            .with_remote_span_context(sc)
            .with_baggage(vec![KeyValue::new("user", "ada")]);
        let mut h = HeaderMap::new();
        inject(&cx, &mut h);
        assert!(h["traceparent"].to_str().expect("text").contains(TRACE));
        assert_eq!(h["baggage"], "user=ada");
    }
}
