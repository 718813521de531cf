//! The cache for native gRPC (and gRPC-Web, which tonic-web turns into
//! gRPC before it gets here): a cacheable method's request frame is read
//! whole and decoded, so its key is the same canonical request as a REST
//! call's, and a REST call and a gRPC call asking the same thing share one
//! entry. A miss calls the method as a unary call (tonic's client with the
//! dynamic codec); the answer goes back as one message frame and an OK
//! trailer. A compressed or undecodable frame is not cached: it goes on
//! unchanged, as the bytes read.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, header, request::Parts};
use http_body_util::{BodyExt, Limited, StreamBody};
use meshwork_contracts::dynamic::DynamicCodec;
use prost_reflect::DynamicMessage;
use tonic::{Status, body::Body, metadata::MetadataMap};

use super::{Lookup, wants_fresh};
use crate::{auth::Principal, catalog::Published, edge::Shared, status::grpc_error};

/// What the gRPC front end does with a cacheable call.
pub enum Outcome {
    /// Answered here (from the cache, or a unary call made for it).
    Answered(Response<Body>),
    /// Not cacheable after all: forward it, with the body as read.
    Forward(Parts, Body),
}

pub async fn serve(
    shared: &Shared,
    method: &Published,
    parts: Parts,
    body: Body,
    ttl: super::Freshness,
    principal: Option<&Principal>,
    trace: &opentelemetry::Context,
) -> Outcome {
    let bytes = match Limited::new(body, shared.limits.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Outcome::Answered(grpc_error(&Status::invalid_argument(format!(
                "the request could not be read (at most {} bytes): {e}",
                shared.limits.max_body_bytes
            ))));
        }
    };
    let Some(request) = decode_frame(&bytes, method) else {
        return Outcome::Forward(parts, Body::new(http_body_util::Full::new(bytes)));
    };
    let key = shared.cache.key(method, &request, principal, trace);
    let fresh = wants_fresh(&parts.headers);
    let upstream = async {
        let mut call = tonic::Request::from_parts(
            MetadataMap::from_headers(parts.headers.clone()),
            Default::default(),
            request,
        );
        call.set_timeout(crate::upstream::deadline(&parts.headers, shared.limits.request_timeout));
        let mut grpc = tonic::client::Grpc::new(shared.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("the gateway's sidecar is not reachable: {e}")))?;
        let codec = DynamicCodec(method.descriptor.output());
        Ok(grpc.unary(call, method.grpc_path.clone(), codec).await?.into_inner())
    };
    match shared.cache.get_or_call(key, ttl, fresh, upstream).await {
        Ok((entry, lookup)) => Outcome::Answered(answer(&entry.encoded, lookup, &entry)),
        Err(status) => Outcome::Answered(grpc_error(&status)),
    }
}

/// The request message of an uncompressed single-message gRPC body.
fn decode_frame(bytes: &Bytes, method: &Published) -> Option<DynamicMessage> {
    let (&flag, rest) = bytes.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..)?;
    if flag != 0 || message.len() != len {
        return None;
    }
    DynamicMessage::decode(method.descriptor.input(), message).ok()
}

/// A gRPC response of one message frame and an OK trailer.
fn answer(message: &Bytes, lookup: Lookup, entry: &super::Entry) -> Response<Body> {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.extend_from_slice(message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, Status>(http_body::Frame::data(frame.freeze())),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let mut response = Response::new(Body::new(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(
        header::HeaderName::from_static("cache-status"),
        lookup.cache_status(entry),
    );
    headers.insert(header::ETAG, entry.etag.clone());
    response
}
