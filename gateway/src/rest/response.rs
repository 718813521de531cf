//! The method's answer as REST: one JSON object for a unary call (or the
//! `response_body` field of it); for a server-streaming call, one record per
//! message as newline-delimited JSON (`{"result":…}` lines) or as
//! Server-Sent Events (`event: message`), chosen by `Accept`. A stream that
//! fails midway ends with an error record (`{"error":…}` / `event: error`)
//! carrying the google.rpc.Status, so a truncated stream never looks like
//! a complete one.

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Full, StreamBody};
use prost_reflect::{DynamicMessage, FieldDescriptor, SerializeOptions};
use tonic::{Status, body::Body};

use crate::status::status_json;

/// How a server stream is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    NdJson,
    Sse,
}

impl StreamFormat {
    /// SSE when the client accepts `text/event-stream`, else NDJSON.
    pub fn from_accept(headers: &http::HeaderMap) -> Self {
        let accepts_sse = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/event-stream"));
        if accepts_sse {
            StreamFormat::Sse
        } else {
            StreamFormat::NdJson
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            StreamFormat::NdJson => "application/x-ndjson",
            StreamFormat::Sse => "text/event-stream",
        }
    }
}

/// Proto3 JSON as REST clients expect it: camelCase names, int64 as
/// strings, enums by name, and fields at their default values written out
/// (a stock of 0 is `"stock": 0`, not missing).
fn options() -> SerializeOptions {
    SerializeOptions::new().skip_default_fields(false)
}

fn to_json(message: &DynamicMessage, response_body: Option<&FieldDescriptor>) -> Result<Vec<u8>, Status> {
    let failed = |e: serde_json::Error| Status::internal(format!("the response does not print as JSON: {e}"));
    match response_body {
        None => {
            let mut out = Vec::with_capacity(256);
            let mut serializer = serde_json::Serializer::new(&mut out);
            message
                .serialize_with_options(&mut serializer, &options())
                .map_err(failed)?;
            Ok(out)
        }
        Some(field) => {
            let whole = message
                .serialize_with_options(serde_json::value::Serializer, &options())
                .map_err(failed)?;
            let part = whole.get(field.json_name()).cloned().unwrap_or(serde_json::Value::Null);
            serde_json::to_vec(&part).map_err(failed)
        }
    }
}

/// A unary answer: 200 with the JSON.
pub fn unary(message: &DynamicMessage, response_body: Option<&FieldDescriptor>) -> Result<Response<Body>, Status> {
    Ok(json_response(Bytes::from(to_json(message, response_body)?)))
}

/// The whole message in JSON, as [`unary`] sends it without a
/// `response_body`: what the cache keeps beside the answer, so that a hit
/// is not printed again.
pub fn whole_json(message: &DynamicMessage) -> Result<Bytes, Status> {
    to_json(message, None).map(Bytes::from)
}

/// 200 with `json`, already printed.
pub fn json_response(json: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(json)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A server stream: 200 at once, then one record per message as it
/// arrives; a failure ends the stream with an error record.
pub fn stream(
    messages: tonic::Streaming<DynamicMessage>,
    format: StreamFormat,
    response_body: Option<FieldDescriptor>,
) -> Response<Body> {
    let records = messages
        .map(move |item| {
            let record = item.and_then(|m| to_json(&m, response_body.as_ref()));
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(encode(format, record)))
        })
        .scan(false, move |ended, frame| {
            // After an error record, nothing more: the stream is over.
            if *ended {
                return futures::future::ready(None);
            }
            if let Ok(f) = &frame
                && f.data_ref().is_some_and(|d| is_error_record(format, d))
            {
                *ended = true;
            }
            futures::future::ready(Some(frame))
        });
    let mut response = Response::new(Body::new(StreamBody::new(records)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn encode(format: StreamFormat, record: Result<Vec<u8>, Status>) -> Bytes {
    let (kind, json) = match record {
        Ok(json) => ("result", json),
        Err(status) => ("error", serde_json::to_vec(&status_json(&status)).unwrap_or_default()),
    };
    let mut out = Vec::with_capacity(json.len() + 24);
    match format {
        StreamFormat::NdJson => {
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(kind.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(&json);
            out.extend_from_slice(b"}\n");
        }
        StreamFormat::Sse => {
            out.extend_from_slice(if kind == "error" {
                b"event: error\ndata: "
            } else {
                b"event: message\ndata: "
            });
            out.extend_from_slice(&json);
            out.extend_from_slice(b"\n\n");
        }
    }
    Bytes::from(out)
}

fn is_error_record(format: StreamFormat, data: &Bytes) -> bool {
    match format {
        StreamFormat::NdJson => data.starts_with(b"{\"error\":"),
        StreamFormat::Sse => data.starts_with(b"event: error"),
    }
}
