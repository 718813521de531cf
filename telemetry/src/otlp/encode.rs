//! A batch of finished spans written straight into the bytes of an OTLP
//! `ExportTraceServiceRequest`.
//!
//! Written by hand because no crate does it: opentelemetry-otlp first
//! converts every span into owned protobuf structs (a `String` for each
//! attribute's key and value, a `Vec` for each id) and only then encodes
//! them. Measured with callgrind on the sidecar with a collector listening,
//! that took the outbound side from 76,000 instructions per call (tracing
//! off) to 99,000; written straight from the span, which leaves a copy of
//! each string and nothing to free, it is 79,000-83,000. The field numbers
//! are those of opentelemetry-proto's `trace/v1/trace.proto` and
//! `common/v1/common.proto`; the tests decode the bytes with the official
//! generated types and compare them with the official conversion.
//!
//! Each message is written after its length, which a nested message knows
//! only once written: a span is written to a scratch buffer and then
//! copied after its length; the small messages (attributes, status) have
//! their length worked out first.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{SpanContext, SpanId, SpanKind, Status},
};
use opentelemetry_sdk::{Resource, trace::SpanData};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// The encoded `Resource` message of the process, written once.
#[derive(Debug, Clone, Default)]
pub struct EncodedResource {
    message: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    pub fn new(resource: &Resource) -> Self {
        let mut message = Vec::new();
        for (key, value) in resource.iter() {
            key_value_field(1, key.as_str(), value, &mut message);
        }
        EncodedResource {
            message,
            schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// Buffers kept from one batch to the next, so that a batch allocates only
/// its request (and the buffers, when it is larger than any before).
#[derive(Debug, Default)]
pub struct Encoder {
    /// Each scope's encoded spans, in the order the scopes first appear.
    scopes: Vec<(InstrumentationScope, Vec<u8>)>,
    span: Vec<u8>,
    scope: Vec<u8>,
    scope_message: Vec<u8>,
    scope_spans: Vec<u8>,
}

impl Encoder {
    /// The request that exports `spans` as coming from `resource`.
    pub fn request(&mut self, resource: &EncodedResource, spans: &[SpanData]) -> Vec<u8> {
        for (_, encoded) in &mut self.scopes {
            encoded.clear();
        }
        let mut used = 0;
        for span in spans {
            let at = match self.scopes[..used]
                .iter()
                .position(|(scope, _)| *scope == span.instrumentation_scope)
            {
                Some(at) => at,
                None => {
                    if used == self.scopes.len() {
                        self.scopes.push((span.instrumentation_scope.clone(), Vec::new()));
                    } else {
                        self.scopes[used].0 = span.instrumentation_scope.clone();
                    }
                    used += 1;
                    used - 1
                }
            };
            self.span.clear();
            span_message(span, &mut self.span);
            message_field(2, &self.span, &mut self.scopes[at].1);
        }
        // ScopeSpans, each after its length, all in `scope_spans`.
        self.scope_spans.clear();
        for (scope, encoded) in &self.scopes[..used] {
            self.scope.clear();
            instrumentation_scope(scope, &mut self.scope);
            self.scope_message.clear();
            message_field(1, &self.scope, &mut self.scope_message);
            self.scope_message.extend_from_slice(encoded);
            string_field(3, scope.schema_url().unwrap_or_default(), &mut self.scope_message);
            message_field(2, &self.scope_message, &mut self.scope_spans);
        }
        // ResourceSpans { resource = 1, scope_spans = 2, schema_url = 3 }.
        let resource_spans_len = key_len(1)
            + encoded_len_varint(resource.message.len() as u64)
            + resource.message.len()
            + self.scope_spans.len()
            + string_len(3, &resource.schema_url);
        let mut request =
            Vec::with_capacity(key_len(1) + encoded_len_varint(resource_spans_len as u64) + resource_spans_len);
        encode_key(1, WireType::LengthDelimited, &mut request);
        encode_varint(resource_spans_len as u64, &mut request);
        message_field(1, &resource.message, &mut request);
        request.extend_from_slice(&self.scope_spans);
        string_field(3, &resource.schema_url, &mut request);
        request
    }
}

fn instrumentation_scope(scope: &InstrumentationScope, out: &mut Vec<u8>) {
    string_field(1, scope.name(), out);
    string_field(2, scope.version().unwrap_or_default(), out);
    for attribute in scope.attributes() {
        key_value_field(3, attribute.key.as_str(), &attribute.value, out);
    }
}

/// The fields of an OTLP `Span`.
fn span_message(span: &SpanData, out: &mut Vec<u8>) {
    let context = &span.span_context;
    bytes_field(1, &context.trace_id().to_bytes(), out);
    bytes_field(2, &context.span_id().to_bytes(), out);
    trace_state(3, context, out);
    if span.parent_span_id != SpanId::INVALID {
        bytes_field(4, &span.parent_span_id.to_bytes(), out);
    }
    string_field(5, &span.name, out);
    varint_field(6, span_kind(&span.span_kind), out);
    fixed64_field(7, nanos(span.start_time), out);
    fixed64_field(8, nanos(span.end_time), out);
    attributes(9, &span.attributes, out);
    varint_field(10, u64::from(span.dropped_attributes_count), out);
    for event in span.events.iter() {
        let len = fixed64_len(1, nanos(event.timestamp))
            + string_len(2, &event.name)
            + attributes_len(3, &event.attributes)
            + varint_len(4, u64::from(event.dropped_attributes_count));
        length_delimited(11, len, out);
        fixed64_field(1, nanos(event.timestamp), out);
        string_field(2, &event.name, out);
        attributes(3, &event.attributes, out);
        varint_field(4, u64::from(event.dropped_attributes_count), out);
    }
    varint_field(12, u64::from(span.events.dropped_count), out);
    for link in span.links.iter() {
        let state = link.span_context.trace_state().header();
        let flags = span_flags(link.span_context.is_remote(), &link.span_context);
        let len = bytes_len(1, 16)
            + bytes_len(2, 8)
            + string_len(3, &state)
            + attributes_len(4, &link.attributes)
            + varint_len(5, u64::from(link.dropped_attributes_count))
            + fixed32_len(6, flags);
        length_delimited(13, len, out);
        bytes_field(1, &link.span_context.trace_id().to_bytes(), out);
        bytes_field(2, &link.span_context.span_id().to_bytes(), out);
        string_field(3, &state, out);
        attributes(4, &link.attributes, out);
        varint_field(5, u64::from(link.dropped_attributes_count), out);
        fixed32_field(6, flags, out);
    }
    varint_field(14, u64::from(span.links.dropped_count), out);
    // Status { message = 2, code = 3 }, present even when unset, as the
    // official conversion sends it.
    let (message, code) = match &span.status {
        Status::Unset => ("", 0),
        Status::Ok => ("", 1),
        Status::Error { description } => (description.as_ref(), 2),
    };
    length_delimited(15, string_len(2, message) + varint_len(3, code), out);
    string_field(2, message, out);
    varint_field(3, code, out);
    fixed32_field(16, span_flags(span.parent_span_is_remote, context), out);
}

/// The span's `flags`: its trace flags, and whether its parent is remote
/// (OTLP's `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE` and `_IS_REMOTE` bits).
fn span_flags(remote: bool, context: &SpanContext) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn trace_state(tag: u32, context: &SpanContext, out: &mut Vec<u8>) {
    let state = context.trace_state();
    // `header()` builds a string; most spans have no trace state.
    if *state != opentelemetry::trace::TraceState::NONE {
        string_field(tag, &state.header(), out);
    }
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

fn attributes(tag: u32, attributes: &[KeyValue], out: &mut Vec<u8>) {
    for attribute in attributes {
        key_value_field(tag, attribute.key.as_str(), &attribute.value, out);
    }
}

fn attributes_len(tag: u32, attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|a| message_len(tag, key_value_len(a.key.as_str(), &a.value)))
        .sum()
}

/// A `KeyValue { key = 1, value = 2 }` as field `tag`.
fn key_value_field(tag: u32, key: &str, value: &Value, out: &mut Vec<u8>) {
    length_delimited(tag, key_value_len(key, value), out);
    string_field(1, key, out);
    length_delimited(2, any_value_len(value), out);
    any_value(value, out);
}

fn key_value_len(key: &str, value: &Value) -> usize {
    string_len(1, key) + message_len(2, any_value_len(value))
}

/// The fields of an `AnyValue`: one of string = 1, bool = 2, int = 3,
/// double = 4, array = 5 (`ArrayValue { values = 1 }`). A value always
/// writes its field, even when it is the type's default, since the oneof
/// says which type it is.
fn any_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::String(s) => {
            length_delimited(1, s.as_str().len(), out);
            out.extend_from_slice(s.as_str().as_bytes());
        }
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, out);
            encode_varint(u64::from(*b), out);
        }
        Value::I64(i) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(*i as u64, out);
        }
        Value::F64(f) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Array(array) => {
            length_delimited(5, array_len(array), out);
            for_each_element(array, |element| {
                length_delimited(1, any_value_len(&element), out);
                any_value(&element, out);
            });
        }
        // Value is non-exhaustive; a kind this code does not know goes as text.
        other => any_value(&Value::String(other.to_string().into()), out),
    }
}

fn any_value_len(value: &Value) -> usize {
    match value {
        Value::String(s) => message_len(1, s.as_str().len()),
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::Array(array) => message_len(5, array_len(array)),
        other => message_len(1, other.to_string().len()),
    }
}

fn array_len(array: &Array) -> usize {
    let mut len = 0;
    for_each_element(array, |element| len += message_len(1, any_value_len(&element)));
    len
}

fn for_each_element(array: &Array, mut each: impl FnMut(Value)) {
    match array {
        Array::Bool(values) => values.iter().for_each(|v| each(Value::Bool(*v))),
        Array::I64(values) => values.iter().for_each(|v| each(Value::I64(*v))),
        Array::F64(values) => values.iter().for_each(|v| each(Value::F64(*v))),
        Array::String(values) => values.iter().for_each(|v| each(Value::String(v.clone()))),
        other => each(Value::String(other.to_string().into())),
    }
}

// The field writers. Scalars at their default value are left out, as
// protobuf's own encoders do; readers take a missing field as the default.

fn length_delimited(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn message_field(tag: u32, message: &[u8], out: &mut Vec<u8>) {
    length_delimited(tag, message.len(), out);
    out.extend_from_slice(message);
}

fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn string_field(tag: u32, value: &str, out: &mut Vec<u8>) {
    if !value.is_empty() {
        message_field(tag, value.as_bytes(), out);
    }
}

fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        message_len(tag, value.len())
    }
}

fn bytes_field(tag: u32, value: &[u8], out: &mut Vec<u8>) {
    message_field(tag, value, out);
}

fn bytes_len(tag: u32, len: usize) -> usize {
    message_len(tag, len)
}

fn varint_field(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }
}

fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn fixed64_field(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed64_len(tag: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(tag) + 8 }
}

fn fixed32_field(tag: u32, value: u32, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32_len(tag: u32, value: u32) -> usize {
    if value == 0 { 0 } else { key_len(tag) + 4 }
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, time::Duration};

    use opentelemetry::{
        KeyValue, StringValue,
        trace::{Event, Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_proto::{
        tonic::collector::trace::v1::ExportTraceServiceRequest,
        transform::{common::tonic::ResourceAttributesWithSchema, trace::tonic::group_spans_by_resource_and_scope},
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;

    use super::*;

    fn context(trace: u128, span: u64, state: TraceState, remote: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            state,
        )
    }

    /// A span as the sidecar makes them: a server span with a remote parent,
    /// string and integer attributes, an error status.
    fn sidecar_span(n: u64, scope: &InstrumentationScope) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789 + n);
        SpanData {
            span_context: context(0xabc + u128::from(n), 0x10 + n, TraceState::NONE, false),
            parent_span_id: SpanId::from(0x99),
            parent_span_is_remote: true,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("shop.cart.v1.CartService/Checkout"),
            start_time: start,
            end_time: start + Duration::from_micros(250),
            attributes: vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", "shop.cart.v1.CartService"),
                KeyValue::new(
                    "meshwork.peer.identity",
                    StringValue::from(std::sync::Arc::<str>::from(
                        "spiffe://meshwork.local/ns/shop/sa/gateway",
                    )),
                ),
                KeyValue::new("rpc.grpc.status_code", 14_i64),
                KeyValue::new("meshwork.retries", 0_i64),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::error("UNAVAILABLE"),
            instrumentation_scope: scope.clone(),
        }
    }

    /// A span with everything else OTLP carries: every value type, arrays,
    /// events, links, a trace state, dropped counts, no parent, OK status.
    fn everything_span(scope: &InstrumentationScope) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "retry",
            start + Duration::from_millis(1),
            vec![KeyValue::new("attempt", 2_i64), KeyValue::new("ok", false)],
            1,
        ));
        events.events.push(Event::new("bare", start, Vec::new(), 0));
        events.dropped_count = 3;
        let mut links = SpanLinks::default();
        links.links.push(Link::new(
            context(
                7,
                8,
                TraceState::from_key_value([("vendor", "x")]).expect("state"),
                true,
            ),
            vec![KeyValue::new("why", "follows")],
            2,
        ));
        links.dropped_count = 1;
        SpanData {
            span_context: context(
                1,
                2,
                TraceState::from_key_value([("mesh", "w1"), ("b", "c")]).expect("state"),
                false,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: Cow::Owned("GET /v1/products/{product_id}".into()),
            start_time: start,
            end_time: start + Duration::from_secs(1),
            attributes: vec![
                KeyValue::new("flag", true),
                KeyValue::new("off", false),
                KeyValue::new("zero", 0_i64),
                KeyValue::new("negative", -42_i64),
                KeyValue::new("ratio", 0.25_f64),
                KeyValue::new("empty", ""),
                KeyValue::new("ids", Value::Array(Array::I64(vec![1, -2, 0]))),
                KeyValue::new("names", Value::Array(Array::String(vec!["a".into(), "".into()]))),
                KeyValue::new("bits", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, 0.0]))),
            ],
            dropped_attributes_count: 4,
            events,
            links,
            status: Status::Ok,
            instrumentation_scope: scope.clone(),
        }
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_service_name("cart-proxy")
            .with_attribute(KeyValue::new("host.name", "pod-7"))
            .with_schema_url([], "https://opentelemetry.io/schemas/1.26.0")
            .build()
    }

    /// What opentelemetry-proto's own conversion makes of `spans`.
    fn official(spans: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans.to_vec(),
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    fn ours(encoder: &mut Encoder, spans: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
        let bytes = encoder.request(&EncodedResource::new(resource), spans);
        ExportTraceServiceRequest::decode(bytes.as_slice()).expect("our bytes decode as an export request")
    }

    #[test]
    fn a_batch_decodes_to_what_the_official_conversion_makes() {
        let meshwork = InstrumentationScope::builder("meshwork").build();
        let other = InstrumentationScope::builder("library")
            .with_version("1.2.3")
            .with_schema_url("https://example.com/schema")
            .with_attributes([KeyValue::new("lang", "rust")])
            .build();
        let batch = vec![
            sidecar_span(1, &meshwork),
            everything_span(&other),
            sidecar_span(2, &meshwork),
        ];
        let resource = resource();
        let mut encoder = Encoder::default();
        assert_eq!(ours(&mut encoder, &batch, &resource), official(&batch, &resource));
        // The buffers kept for the next batch hold nothing of this one.
        let next = vec![sidecar_span(3, &meshwork)];
        assert_eq!(ours(&mut encoder, &next, &resource), official(&next, &resource));
        assert_eq!(ours(&mut encoder, &[], &resource), official(&[], &resource));
    }

    #[test]
    fn the_bytes_are_what_prost_writes_for_a_sidecar_span() {
        // Field for field and byte for byte, where the official structs have
        // no optional parts to differ in.
        let meshwork = InstrumentationScope::builder("meshwork").build();
        let batch = vec![sidecar_span(5, &meshwork)];
        let resource = resource();
        let bytes = Encoder::default().request(&EncodedResource::new(&resource), &batch);
        assert_eq!(bytes, official(&batch, &resource).encode_to_vec());
    }
}
