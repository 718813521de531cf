//! The sidecar's span for one call: SERVER on the inbound side, CLIENT on
//! the outbound side, named `pkg.Service/Method`, with the OpenTelemetry
//! RPC attributes. Made with the OpenTelemetry API directly rather than
//! through `tracing`: on the hot path that saves a layer of indirection and
//! the per-span field bookkeeping.

use std::borrow::Cow;

use opentelemetry::{
    Context, KeyValue, StringValue,
    trace::{Span as _, SpanKind, Status, Tracer as _},
};
use opentelemetry_sdk::trace::{SdkTracer, Span};

use super::{metrics::Direction, names::Method};

/// Attributes set at the start and at the end of a span; sized so the
/// span's attribute vector never grows.
const ATTRIBUTES: usize = 9;

/// What a span says about the call and its peer.
pub struct CallInfo<'a> {
    pub direction: Direction,
    pub method: Method,
    /// The request path, naming the span when the method is unknown.
    pub path: &'a str,
    /// The peer workload: the caller inbound, the destination outbound.
    pub peer: &'static str,
    /// The peer's identity: the caller's SPIFFE ID inbound, the destination
    /// service outbound.
    pub peer_identity: StringValue,
    /// This sidecar's workload.
    pub local: &'static str,
}

pub fn start(tracer: &SdkTracer, call: CallInfo<'_>, parent: &Context) -> Span {
    let name: Cow<'static, str> = if call.method.full == super::names::UNKNOWN {
        // Not a known contract: the path names it (spans are not metric
        // series, so this does not grow anything without bound).
        Cow::Owned(call.path.trim_start_matches('/').to_owned())
    } else {
        Cow::Borrowed(call.method.full)
    };
    let (kind, server) = match call.direction {
        Direction::Inbound => (SpanKind::Server, call.local),
        Direction::Outbound => (SpanKind::Client, call.peer),
    };
    let mut attributes = Vec::with_capacity(ATTRIBUTES);
    attributes.extend([
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", call.method.service),
        KeyValue::new("rpc.method", call.method.method),
        KeyValue::new("server.address", server),
        KeyValue::new("net.peer.name", call.peer),
        KeyValue::new("meshwork.peer.identity", call.peer_identity),
    ]);
    tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, parent)
}

/// Records how the call ended and ends the span.
pub fn finish(span: &mut Span, direction: Direction, code: u8, retries: u32) {
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
    span.set_attribute(KeyValue::new("meshwork.retries", i64::from(retries)));
    // The RPC conventions: a client fails on any non-OK status, a server
    // only on those that mean the server failed.
    let failed = match direction {
        Direction::Outbound => code != meshwork_telemetry::grpc_status::OK,
        Direction::Inbound => meshwork_telemetry::grpc_status::is_server_error(code),
    };
    if failed {
        span.set_status(Status::error(meshwork_telemetry::grpc_status::name(code)));
    }
    span.end();
}
