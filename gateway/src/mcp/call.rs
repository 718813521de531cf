//! One `tools/call`: the arguments become the method's request message, the
//! call goes through the gateway's sidecar like a REST call (the verified
//! user and trace context by `upstream::into_mesh`, never the client's
//! token; the gateway's deadline), and the answer becomes a tool result:
//! `structuredContent` and the same JSON as text, or `isError` with the
//! gRPC status name and message so that the model can correct itself.
//!
//! Arguments that do not fit the input schema are a tool execution error
//! naming the field, as the specification's tools chapter says of input
//! validation errors (a protocol error is kept for unknown tools).
//!
//! A server-streaming method sends a progress notification per message
//! (when the client gave a progress token) and ends with every message
//! collected, after the stream ends, after `[gateway.mcp] stream_messages`
//! messages or after `stream_window`, whichever comes first: several
//! methods (`WatchProducts`) stream until the caller hangs up. A client
//! that cancels (closes the SSE stream, or sends `notifications/cancelled`)
//! cancels the request's token; the gRPC call is dropped with it, which
//! resets its HTTP/2 stream, so the service sees the cancellation.

use std::time::Instant;

use http::HeaderMap;
use meshwork_contracts::dynamic::DynamicCodec;
use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions};
use rmcp::{
    RoleServer,
    model::{CallToolResult, ContentBlock, JsonObject, ProgressNotificationParam},
    service::RequestContext,
};
use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::{Status, metadata::MetadataMap};

use super::{
    handler::{Caller, allows},
    tools::Tool,
};
use crate::{
    metrics::{HttpStatus, RequestLabels},
    upstream,
};

pub async fn call(
    tool: &Tool,
    arguments: Option<JsonObject>,
    caller: &Caller,
    config: &meshwork_config::Mcp,
    context: &RequestContext<RoleServer>,
) -> CallToolResult {
    let started = Instant::now();
    let outcome = attempt(tool, arguments, caller, config, context).await;
    let code = outcome.as_ref().err().map_or(0, |s| s.code() as u8);
    caller.shared.metrics.request(
        RequestLabels {
            protocol: "mcp",
            rpc: crate::metrics::Shared(tool.method.label.clone()),
            http_status: HttpStatus(200),
            grpc_status: meshwork_telemetry::grpc_status::label(code),
        },
        started.elapsed(),
    );
    outcome.unwrap_or_else(|status| failure(&status))
}

async fn attempt(
    tool: &Tool,
    arguments: Option<JsonObject>,
    caller: &Caller,
    config: &meshwork_config::Mcp,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, Status> {
    let method = &tool.method;
    // The HTTP layer answered 401/403 already; this holds for any path in.
    if !allows(&method.access, caller.principal.as_ref()) {
        return Err(Status::permission_denied(format!(
            "{} is not allowed for this caller",
            tool.def.name
        )));
    }
    let message = request_message(tool, arguments, caller).map_err(Status::invalid_argument)?;
    let mut headers = HeaderMap::new();
    let trace = (caller.shared.preferences)
        .with_user_context(&caller.trace, caller.principal.as_ref(), &method.path)
        .await;
    upstream::into_mesh(&mut headers, caller.principal.as_ref(), &trace);
    let mut request = tonic::Request::from_parts(MetadataMap::from_headers(headers), Default::default(), message);
    request.set_timeout(caller.deadline);
    // The same limits as REST and gRPC calls of the method: a refusal is
    // the tool's error (RESOURCE_EXHAUSTED), which an agent can read.
    let limit = (caller.shared.rate_limits)
        .check(method, caller.principal.as_ref(), caller.client, &caller.headers)
        .await;
    if let Some(status) = limit.refusal() {
        return Err(status);
    }

    let calling = async {
        if method.server_streaming {
            stream(tool, request, caller, config, context).await
        } else {
            unary(tool, request, caller).await
        }
    };
    // Dropping the call on cancellation resets its HTTP/2 stream.
    tokio::select! {
        result = calling => result,
        () = context.ct.cancelled() => Err(Status::cancelled("the client cancelled the call")),
    }
}

/// The arguments as the method's request message, or why they are not one.
fn request_message(tool: &Tool, arguments: Option<JsonObject>, caller: &Caller) -> Result<DynamicMessage, String> {
    let mut arguments = arguments.unwrap_or_default();
    for field in &tool.me_fields {
        let json_name = tool
            .method
            .descriptor
            .input()
            .get_field_by_name(field)
            .map(|f| f.json_name().to_string());
        for key in [Some(field.clone()), json_name].into_iter().flatten() {
            if arguments.get(&key).and_then(Value::as_str) == Some("me") {
                match &caller.principal {
                    Some(p) => {
                        arguments.insert(key, Value::String(p.user_id.clone()));
                    }
                    None => return Err(format!("'{key}': \"me\" needs a signed-in user (a bearer token)")),
                }
            }
        }
    }
    let input = tool.method.descriptor.input();
    for name in &tool.required {
        let original = input
            .fields()
            .find(|f| f.json_name() == name)
            .map(|f| f.name().to_string());
        let present = arguments.contains_key(name) || original.is_some_and(|o| arguments.contains_key(&o));
        if !present {
            return Err(format!("invalid arguments: '{name}' is required"));
        }
    }
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(Value::Object(arguments), &mut track);
    DynamicMessage::deserialize_with_options(input, tracked, &DeserializeOptions::new()).map_err(|e| {
        let path = track.path().to_string();
        if path.is_empty() || path == "." {
            format!("invalid arguments: {e}")
        } else {
            format!("invalid arguments: field '{path}': {e}")
        }
    })
}

async fn unary(
    tool: &Tool,
    request: tonic::Request<DynamicMessage>,
    caller: &Caller,
) -> Result<CallToolResult, Status> {
    let method = &tool.method;
    let mut grpc = sidecar(caller).await?;
    let codec = DynamicCodec(method.descriptor.output());
    let answer = grpc.unary(request, method.grpc_path.clone(), codec).await?;
    Ok(CallToolResult::structured(json(answer.get_ref())?))
}

async fn sidecar(caller: &Caller) -> Result<tonic::client::Grpc<tonic::transport::Channel>, Status> {
    let mut grpc = tonic::client::Grpc::new(caller.shared.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the gateway's sidecar is not reachable: {e}")))?;
    Ok(grpc)
}

async fn stream(
    tool: &Tool,
    request: tonic::Request<DynamicMessage>,
    caller: &Caller,
    config: &meshwork_config::Mcp,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, Status> {
    let method = &tool.method;
    let mut grpc = sidecar(caller).await?;
    let codec = DynamicCodec(method.descriptor.output());
    let mut messages = grpc
        .server_streaming(request, method.grpc_path.clone(), codec)
        .await?
        .into_inner();
    let progress = context.meta.get_progress_token();
    let window = tokio::time::sleep(config.stream_window);
    tokio::pin!(window);
    let mut collected = Vec::new();
    while collected.len() < config.stream_messages {
        let next = tokio::select! {
            next = messages.next() => next,
            () = &mut window => break,
        };
        let message = match next {
            None => break,
            Some(Ok(message)) => message,
            Some(Err(status)) => {
                let received = collected.len();
                return Err(Status::new(
                    status.code(),
                    format!("{} (after {received} messages)", status.message()),
                ));
            }
        };
        let value = json(&message)?;
        if let Some(token) = &progress {
            let mut note = ProgressNotificationParam::new(token.clone(), (collected.len() + 1) as f64);
            note.message = Some(value.to_string());
            // A client gone away shows as the request's cancellation.
            let _ = context.peer.notify_progress(note).await;
        }
        collected.push(value);
    }
    Ok(CallToolResult::structured(serde_json::json!({ "messages": collected })))
}

/// The message as the gateway writes JSON everywhere: proto3 JSON with
/// defaults written out.
fn json(message: &DynamicMessage) -> Result<Value, Status> {
    message
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .map_err(|e| Status::internal(format!("the answer cannot be written as JSON: {e}")))
}

/// A gRPC error as a tool result: `isError`, the status name and message.
fn failure(status: &Status) -> CallToolResult {
    let name = meshwork_telemetry::grpc_status::name(status.code() as u8);
    CallToolResult::error(vec![ContentBlock::text(format!("{name}: {}", status.message()))])
}
