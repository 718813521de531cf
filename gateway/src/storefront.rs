//! The shop's storefront: static HTML, CSS and plain JavaScript compiled
//! into the binary (no build step, nothing to install), calling the REST API
//! of the same origin.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::Full;
use tonic::body::Body;

/// (path, content type, contents).
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../storefront/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../storefront/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../storefront/style.css"),
    ),
];

/// Whether the request is for one of the storefront's files.
pub fn serves(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && FILES.iter().any(|(p, _, _)| *p == path)
}

pub fn serve<B>(request: &Request<B>) -> Response<Body> {
    let path = request.uri().path();
    let Some((_, content_type, text)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return crate::rest::error(&tonic::Status::not_found(format!("no file {path}")));
    };
    let mut response = Response::new(Body::new(Full::new(Bytes::from_static(text.as_bytes()))));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
