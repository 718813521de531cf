//! The OTLP/gRPC span exporter: each batch encoded straight to protobuf
//! ([`encode`]) on the batch processor's thread, then sent with tonic as
//! one unary `TraceService/Export` call from the export runtime
//! ([`crate::runtime`]), which holds the channel's connection.

mod encode;

use std::{sync::Mutex, time::Duration};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use tokio::runtime::Handle;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::{Channel, Endpoint},
};

use encode::EncodedResource;

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends batches of spans to one OTLP/gRPC collector.
#[derive(Debug)]
pub struct OtlpExporter {
    channel: Channel,
    runtime: Handle,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`, sent with every export.
    headers: MetadataMap,
    timeout: Duration,
    resource: EncodedResource,
    /// Only the batch processor's thread encodes; the lock is never contended.
    encoder: Mutex<encode::Encoder>,
}

impl OtlpExporter {
    /// An exporter to `endpoint` (`http://host:port`); connects on first use,
    /// from `runtime`.
    pub fn new(endpoint: &str, headers: MetadataMap, timeout: Duration, runtime: Handle) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = {
            let _on_export_runtime = runtime.enter();
            endpoint.connect_lazy()
        };
        Ok(OtlpExporter {
            channel,
            runtime,
            headers,
            timeout,
            resource: EncodedResource::default(),
            encoder: Mutex::default(),
        })
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let request = match self.encoder.lock() {
            Ok(mut encoder) => encoder.request(&self.resource, &batch),
            Err(_) => return Err(OTelSdkError::InternalFailure("the span encoder panicked".into())),
        };
        drop(batch);
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let mut call = tonic::Request::new(Bytes::from(request));
        *call.metadata_mut() = self.headers.clone();
        call.set_timeout(self.timeout);
        let timeout = self.timeout;
        // On the export runtime: the channel's connection and timers live there,
        // and the batch processor's thread, which awaits this, has no runtime.
        let sent = self.runtime.spawn(async move {
            let exported = async {
                grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
                grpc.unary(call, PathAndQuery::from_static(EXPORT), EncodedRequest)
                    .await
            };
            match tokio::time::timeout(timeout, exported).await {
                Ok(result) => result.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!("no answer within {timeout:?}"))),
            }
        });
        match sent.await {
            Ok(Ok(response)) => rejected(response),
            Ok(Err(status)) => Err(OTelSdkError::InternalFailure(format!(
                "the collector answered {:?}: {}",
                status.code(),
                status.message()
            ))),
            Err(join) => Err(OTelSdkError::InternalFailure(format!("the export task failed: {join}"))),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

/// A collector may accept a batch in part (`partial_success`); the spans it
/// rejected count as failed.
fn rejected(response: ExportTraceServiceResponse) -> OTelSdkResult {
    match response.partial_success {
        Some(partial) if partial.rejected_spans > 0 => Err(OTelSdkError::InternalFailure(format!(
            "the collector rejected {} spans: {}",
            partial.rejected_spans, partial.error_message
        ))),
        _ => Ok(()),
    }
}

/// The standard `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (else
/// `OTEL_EXPORTER_OTLP_HEADERS`): `key=value` pairs separated by commas,
/// values percent-decoded. A pair that is not a valid header is skipped,
/// and said once.
pub fn headers_from_env() -> MetadataMap {
    let value = ["OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_default();
    parse_headers(&value)
}

fn parse_headers(value: &str) -> MetadataMap {
    let mut headers = MetadataMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = pair.split_once('=').and_then(|(key, value)| {
            let key = tonic::metadata::AsciiMetadataKey::from_bytes(key.trim().to_ascii_lowercase().as_bytes()).ok()?;
            let value = percent_decode(value.trim())?.parse().ok()?;
            Some((key, value))
        });
        match parsed {
            Some((key, value)) => {
                headers.append(key, value);
            }
            None => eprintln!("OTEL_EXPORTER_OTLP_HEADERS: `{pair}` is not key=value with a valid header; skipped"),
        }
    }
    headers
}

/// `%XX` escapes decoded; None when one is broken or the result is not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The codec of an export: the request already encoded, the response
/// decoded with the official message type.
#[derive(Debug, Clone, Copy)]
struct EncodedRequest;

impl Codec for EncodedRequest {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = EncodedRequest;
    type Decoder = EncodedRequest;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedRequest
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedRequest
    }
}

impl Encoder for EncodedRequest {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for EncodedRequest {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportTraceServiceResponse>, Status> {
        let response = prost::Message::decode(src.copy_to_bytes(src.remaining()))
            .map_err(|e| Status::internal(format!("the collector's answer does not decode: {e}")))?;
        Ok(Some(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_key_value_pairs_with_percent_encoded_values() {
        let headers = parse_headers(" api-key = s3cr%3Dt ,X-Tenant=acme,broken,=novalue");
        assert_eq!(headers.get("api-key").and_then(|v| v.to_str().ok()), Some("s3cr=t"));
        assert_eq!(headers.get("x-tenant").and_then(|v| v.to_str().ok()), Some("acme"));
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("100%"), None);
    }
}
