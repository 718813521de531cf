//! REST/JSON, transcoded from the contracts' `google.api.http` rules: find
//! the route, check who calls, build the request message from path, query
//! and body, call the method through the mesh, and answer in JSON.

pub mod fields;
pub mod request;
pub mod response;
pub mod template;

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use meshwork_contracts::dynamic::DynamicCodec;
use tonic::{Status, body::Body, metadata::MetadataMap};

use crate::{
    auth::Principal,
    cache,
    caller::{self, Refusal},
    catalog::{Lookup, Route},
    edge::{Outcome, Shared},
    status::rest_error,
    upstream,
};

pub async fn serve(
    shared: &Shared,
    request: Request<Incoming>,
    trace: &opentelemetry::Context,
    outcome: &mut Outcome,
    client: IpAddr,
) -> Response<Body> {
    let catalog = shared.catalog.load_full();
    let (parts, body) = request.into_parts();
    let (route, values) = match catalog.find(&parts.method, parts.uri.path()) {
        Lookup::Found(route, values) => (route, values),
        Lookup::WrongMethod(allowed) => return wrong_method(&parts.method, parts.uri.path(), &allowed),
        Lookup::NotFound => {
            return error(&Status::not_found(format!(
                "no route for {} {}",
                parts.method,
                parts.uri.path()
            )));
        }
    };
    outcome.route = Some(route.template.to_string());
    outcome.rpc = Some(route.method.clone());
    if route.method.client_streaming {
        return error(&Status::unimplemented(format!(
            "{} streams its requests, which REST cannot carry; call it over gRPC",
            route.method.label
        )));
    }
    let principal = match caller::authorize(&shared.auth, &route.method, &parts.headers).await {
        Ok(principal) => principal,
        Err(refusal) => {
            shared.metrics.auth_failure(refusal.reason());
            return refused(&refusal);
        }
    };
    outcome.user = principal.as_ref().map(|p| p.user_id.clone());
    let limit = shared
        .rate_limits
        .check(&route.method, principal.as_ref(), client, &parts.headers)
        .await;
    let mut response = match limit.refusal() {
        Some(status) => {
            outcome.grpc = Some(status.code());
            error(&status)
        }
        None => call(shared, route, &values, &parts, body, principal.as_ref(), trace, outcome).await,
    };
    limit.write_headers(response.headers_mut());
    response
}

/// The call itself, once the caller may make it: the request message,
/// the cache or the method, and the answer in JSON.
#[allow(clippy::too_many_arguments)]
async fn call(
    shared: &Shared,
    route: &Route,
    values: &[(&str, String)],
    parts: &http::request::Parts,
    body: Incoming,
    principal: Option<&Principal>,
    trace: &opentelemetry::Context,
    outcome: &mut Outcome,
) -> Response<Body> {
    let me = principal.as_ref().map(|p| p.user_id.as_str());
    if me.is_none() && values.iter().any(|(_, v)| v == "me") {
        return error(&Status::unauthenticated("'me' in the path needs a bearer token"));
    }
    let body = match read_body(body, &parts.headers, shared.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let message = match request::build(route, values, parts.uri.query(), &body, me) {
        Ok(message) => message,
        Err(reason) => return error(&Status::invalid_argument(reason)),
    };
    let mut headers = HeaderMap::new();
    let trace = &shared
        .preferences
        .with_user_context(trace, principal, &route.method.path)
        .await;
    let cached = shared
        .cache
        .ttl_for(&route.method)
        .map(|ttl| (ttl, shared.cache.key(&route.method, &message, principal, trace)));
    upstream::into_mesh(&mut headers, principal, trace);
    let mut call = tonic::Request::from_parts(MetadataMap::from_headers(headers), Default::default(), message);
    call.set_timeout(upstream::deadline(&parts.headers, shared.limits.request_timeout));
    let answer = match cached {
        Some((ttl, key)) => cached_call(shared, route, call, ttl, key, &parts.headers).await,
        None => {
            let answer = call_method(shared, route, call, &parts.headers).await;
            shared.cache.wrote(&route.method, principal);
            answer
        }
    };
    match answer {
        Ok(response) => response,
        Err(status) => {
            outcome.grpc = Some(status.code());
            error(&status)
        }
    }
}

async fn call_method(
    shared: &Shared,
    route: &Route,
    call: tonic::Request<prost_reflect::DynamicMessage>,
    headers: &HeaderMap,
) -> Result<Response<Body>, Status> {
    let method = &route.method;
    let mut grpc = tonic::client::Grpc::new(shared.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the gateway's sidecar is not reachable: {e}")))?;
    let codec = DynamicCodec(method.descriptor.output());
    if method.server_streaming {
        let messages = grpc.server_streaming(call, method.grpc_path.clone(), codec).await?;
        let format = response::StreamFormat::from_accept(headers);
        Ok(response::stream(
            messages.into_inner(),
            format,
            route.response_body.clone(),
        ))
    } else {
        let answer = grpc.unary(call, method.grpc_path.clone(), codec).await?;
        response::unary(answer.get_ref(), route.response_body.as_ref())
    }
}

/// A cacheable unary call: the stored answer, or the method's (one call
/// for concurrent misses), with the edge's HTTP caching fields: `ETag`
/// (and 304 for a matching `If-None-Match`), `Cache-Control` from the TTL,
/// `Age` and `Cache-Status` (RFC 9211).
async fn cached_call(
    shared: &Shared,
    route: &Route,
    call: tonic::Request<prost_reflect::DynamicMessage>,
    ttl: cache::Freshness,
    key: cache::Key,
    headers: &HeaderMap,
) -> Result<Response<Body>, Status> {
    let method = &route.method;
    let scope = if key.personal() { "private" } else { "public" };
    let upstream = async {
        let mut grpc = tonic::client::Grpc::new(shared.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("the gateway's sidecar is not reachable: {e}")))?;
        let codec = DynamicCodec(method.descriptor.output());
        Ok(grpc.unary(call, method.grpc_path.clone(), codec).await?.into_inner())
    };
    let (entry, lookup) = shared
        .cache
        .get_or_call(key, ttl, cache::wants_fresh(headers), upstream)
        .await?;
    let mut response = if cache::not_modified(headers, &entry.etag) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        match (&route.response_body, &entry.json) {
            (None, Some(json)) => response::json_response(json.clone()),
            (response_body, _) => response::unary(&entry.message, response_body.as_ref())?,
        }
    };
    let fields = response.headers_mut();
    fields.insert(header::ETAG, entry.etag.clone());
    if let Ok(value) = HeaderValue::try_from(format!("{scope}, max-age={}", entry.max_age())) {
        fields.insert(header::CACHE_CONTROL, value);
    }
    fields.insert(header::AGE, HeaderValue::from(entry.age()));
    fields.insert(
        header::HeaderName::from_static("cache-status"),
        lookup.cache_status(&entry),
    );
    Ok(response)
}

/// The body, whole: JSON only, at most `limit` bytes (413 above it, told
/// by `Content-Length` before a byte is read).
async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        let mut response = error(&Status::invalid_argument(format!(
            "the body is larger than the gateway's limit of {limit} bytes"
        )));
        *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        response
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(error(&Status::invalid_argument(format!(
                "the body could not be read: {e}"
            ))));
        }
    };
    if !bytes.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let json = content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            let mut response = error(&Status::invalid_argument(format!(
                "send the body as application/json, not '{content_type}'"
            )));
            *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return Err(response);
        }
    }
    Ok(bytes)
}

pub fn error(status: &Status) -> Response<Body> {
    rest_error(status).map(Body::new)
}

pub fn refused(refusal: &Refusal) -> Response<Body> {
    let mut response = error(&refusal.status());
    if let Some(challenge) = refusal.challenge()
        && let Ok(value) = HeaderValue::from_str(challenge)
    {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn wrong_method(method: &http::Method, path: &str, allowed: &[http::Method]) -> Response<Body> {
    let list = allowed.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
    let status = Status::unimplemented(format!("{path} does not take {method}; it takes {list}"));
    let body = serde_json::to_vec(&crate::status::status_json(&status)).unwrap_or_default();
    let mut response = Response::new(Body::new(Full::new(Bytes::from(body))));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(&list) {
        headers.insert(header::ALLOW, value);
    }
    response
}
