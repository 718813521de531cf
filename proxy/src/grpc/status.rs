//! Answering a call with a gRPC status the proxy decides itself: a
//! "trailers-only" response (HTTP 200, `content-type: application/grpc`,
//! `grpc-status` and a percent-encoded `grpc-message` in the headers, no
//! body), which every gRPC client reads as the call's status.

use http::{HeaderValue, Response, StatusCode, header::CONTENT_TYPE};

use crate::body::{ProxyBody, empty};

/// The gRPC status codes the proxy answers with itself (faults answer
/// with any code, through [`response_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

impl Code {
    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Code::InvalidArgument => "3",
            Code::DeadlineExceeded => "4",
            Code::PermissionDenied => "7",
            Code::Unimplemented => "12",
            Code::Internal => "13",
            Code::Unavailable => "14",
        })
    }
}

/// A trailers-only gRPC response with `code` and `message`.
pub fn response(code: Code, message: &str) -> Response<ProxyBody> {
    with_status(code.header_value(), message)
}

/// Like [`response`], for any status a configuration names (fault injection).
pub fn response_for(code: meshwork_config::GrpcCode, message: &str) -> Response<ProxyBody> {
    const VALUES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    let value = usize::try_from(code.as_i32())
        .ok()
        .and_then(|i| VALUES.get(i))
        .unwrap_or(&"2");
    with_status(HeaderValue::from_static(value), message)
}

fn with_status(status: HeaderValue, message: &str) -> Response<ProxyBody> {
    let mut rsp = Response::new(empty());
    *rsp.status_mut() = StatusCode::OK;
    let headers = rsp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", status);
    if let Ok(value) = HeaderValue::try_from(percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
    rsp
}

/// `grpc-message` encoding: printable ASCII except `%` as is, every other
/// byte of the UTF-8 text as `%XX` (the gRPC HTTP/2 spec).
pub fn percent_encode(message: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_only_what_must_be() {
        assert_eq!(percent_encode("plain text: ok/1"), "plain text: ok/1");
        assert_eq!(percent_encode("100%"), "100%25");
        assert_eq!(percent_encode("a\nb"), "a%0Ab");
        assert_eq!(percent_encode("café"), "caf%C3%A9");
    }

    #[test]
    fn trailers_only_response() {
        let rsp = response(Code::PermissionDenied, "demo may not call a.B/C");
        assert_eq!(rsp.status(), StatusCode::OK);
        let h = rsp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "7");
        assert_eq!(h["grpc-message"], "demo may not call a.B/C");
        assert!(http_body::Body::is_end_stream(rsp.body()));
    }

    #[test]
    fn codes_match_the_spec() {
        for (code, n) in [
            (Code::InvalidArgument, 3),
            (Code::DeadlineExceeded, 4),
            (Code::PermissionDenied, 7),
            (Code::Unimplemented, 12),
            (Code::Internal, 13),
            (Code::Unavailable, 14),
        ] {
            assert_eq!(code as i32, n);
            assert_eq!(code.header_value(), n.to_string().as_str());
        }
        let rsp = response_for(meshwork_config::GrpcCode::ResourceExhausted, "x");
        assert_eq!(rsp.headers()["grpc-status"], "8");
    }
}
