//! A gRPC call's status as telemetry records it: the code from
//! `grpc-status` (in trailers, or in the headers of a trailers-only
//! response), or derived from the HTTP status when there is none, following
//! the gRPC spec's HTTP-to-gRPC mapping.

use http::{HeaderMap, HeaderName, StatusCode};

/// The `grpc-status` header (or trailer), parsed once rather than on every
/// lookup.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

pub const OK: u8 = 0;
pub const CANCELLED: u8 = 1;
pub const UNKNOWN: u8 = 2;
pub const UNAVAILABLE: u8 = 14;

/// The last code gRPC defines (UNAUTHENTICATED).
const MAX: u8 = 16;

/// `grpc-status` in `headers`, if present. A code outside 0..=16 reads as
/// UNKNOWN, as gRPC clients read it.
pub fn from_headers(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get(GRPC_STATUS)?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|text| text.trim().parse::<u8>().ok())
        .filter(|&code| code <= MAX)
        .unwrap_or(UNKNOWN);
    Some(code)
}

/// The code of a response that is not HTTP 200: what a gRPC client makes of it.
pub fn from_http(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13, // INTERNAL
        401 => 16, // UNAUTHENTICATED
        403 => 7,  // PERMISSION_DENIED
        404 => 12, // UNIMPLEMENTED
        429 | 502..=504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// The status a response's headers already decide: `grpc-status` in them
/// (trailers-only), or a non-200 HTTP status. `None` when the trailers will tell.
pub fn from_response_head(status: StatusCode, headers: &HeaderMap) -> Option<u8> {
    from_headers(headers).or_else(|| (status != StatusCode::OK).then(|| from_http(status)))
}

/// The code as a label value, without allocating.
pub fn label(code: u8) -> &'static str {
    const LABELS: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    LABELS.get(usize::from(code)).copied().unwrap_or("2")
}

/// The canonical name, for logs: `NOT_FOUND`.
pub fn name(code: u8) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(usize::from(code)).copied().unwrap_or("UNKNOWN")
}

/// Whether a server should mark its span as failed for `code` (the
/// OpenTelemetry gRPC conventions: only codes that mean the server failed).
pub fn is_server_error(code: u8) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn reads_grpc_status() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h), None);
        h.insert("grpc-status", HeaderValue::from_static("5"));
        assert_eq!(from_headers(&h), Some(5));
        h.insert("grpc-status", HeaderValue::from_static("99"));
        assert_eq!(from_headers(&h), Some(UNKNOWN));
        h.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(from_headers(&h), Some(UNKNOWN));
    }

    #[test]
    fn head_decides_only_trailers_only_and_http_errors() {
        let h = HeaderMap::new();
        assert_eq!(from_response_head(StatusCode::OK, &h), None);
        assert_eq!(
            from_response_head(StatusCode::SERVICE_UNAVAILABLE, &h),
            Some(UNAVAILABLE)
        );
        assert_eq!(from_response_head(StatusCode::NOT_FOUND, &h), Some(12));
    }

    #[test]
    fn labels_and_names() {
        assert_eq!(label(0), "0");
        assert_eq!(label(16), "16");
        assert_eq!(label(200), "2");
        assert_eq!(name(5), "NOT_FOUND");
        assert!(is_server_error(14) && !is_server_error(5));
    }
}
