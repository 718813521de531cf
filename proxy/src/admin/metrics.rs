//! `GET /metrics`: the sidecar's registry in the OpenMetrics text format,
//! which Prometheus scrapes natively (and which is a superset of its older
//! text format that most parsers also read).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::Full;
use prometheus_client::{encoding::text::encode, registry::Registry};

const CONTENT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn answer(registry: &Registry) -> Response<Full<Bytes>> {
    // A scrape is a few KiB; start big enough that it rarely grows.
    let mut body = String::with_capacity(16 * 1024);
    let mut rsp = match encode(&mut body, registry) {
        Ok(()) => Response::new(Full::new(Bytes::from(body))),
        Err(error) => {
            // Only a failing `fmt::Write`, which a String never is; answer
            // honestly rather than serve half a scrape.
            tracing::error!(%error, "cannot encode metrics");
            let mut rsp = Response::new(Full::new(Bytes::from_static(b"cannot encode metrics\n")));
            *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return rsp;
        }
    };
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
    rsp
}
