//! Finding how a call ended, to decide on a retry: `grpc-status` in the
//! response headers (a trailers-only response), else in the trailers. To
//! see the trailers of a single-message response, its body is held, up to
//! the replay cap; a longer one is let go as it is (and not retried), and
//! a server stream is never held (the caller must see its messages as they
//! come).

use http::{HeaderMap, Response};
use http_body::Body;
use http_body_util::{BodyExt, Either};
use meshwork_telemetry::grpc_status::GRPC_STATUS;

use crate::{
    body::{Held, ProxyBody},
    gather::Gathered,
};

/// The `grpc-status` in `headers`, if any and well-formed.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    let value = headers.get(GRPC_STATUS)?.as_bytes();
    if value.is_empty() || value.len() > 2 {
        return None;
    }
    value
        .iter()
        .try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
}

/// How a held response ended.
pub enum Ending {
    /// Read to its end: the status in its trailers (`None` without one).
    Status(Option<u32>),
    /// Longer than the cap; given back unread past it.
    TooLarge,
    /// The stream broke before its end.
    Broken(String),
}

/// Reads `rsp`'s body to its trailers, holding at most `cap` bytes, and
/// gives back a response that replays what was read.
pub async fn hold(rsp: Response<ProxyBody>, cap: usize) -> (Response<ProxyBody>, Ending) {
    let (parts, body) = rsp.into_parts();
    let mut body = match body {
        Either::Left(incoming) => incoming,
        // Our own answers carry their status in the headers; nothing to read.
        local @ Either::Right(_) => return (Response::from_parts(parts, local), Ending::Status(None)),
    };
    let mut gathered = Gathered::default();
    while !body.is_end_stream() {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                let empty = Either::Right(Held::default());
                return (Response::from_parts(parts, empty), Ending::Broken(error.to_string()));
            }
        };
        match frame.into_data() {
            Ok(chunk) => {
                gathered.push(chunk);
                if gathered.len() > cap {
                    let held = Held::partial(gathered.into_bytes(), body);
                    return (Response::from_parts(parts, Either::Right(held)), Ending::TooLarge);
                }
            }
            Err(frame) => {
                let trailers = frame.into_trailers().ok();
                let status = trailers.as_ref().and_then(grpc_status);
                let held = Held::complete(gathered.into_bytes(), trailers);
                return (Response::from_parts(parts, Either::Right(held)), Ending::Status(status));
            }
        }
    }
    let held = Held::complete(gathered.into_bytes(), None);
    (Response::from_parts(parts, Either::Right(held)), Ending::Status(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grpc_status() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        for (v, want) in [
            ("0", Some(0)),
            ("14", Some(14)),
            ("16", Some(16)),
            ("x", None),
            ("", None),
            ("140", None),
        ] {
            h.insert("grpc-status", v.parse().expect("value"));
            assert_eq!(grpc_status(&h), want, "{v:?}");
        }
    }
}
