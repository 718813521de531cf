//! Errors in the caller's protocol, decided once at the top: a gRPC status
//! becomes, for REST, the HTTP status of its code (the google.rpc.Code
//! mapping, as grpc-gateway's `HTTPStatusFromCode`) with a
//! `google.rpc.Status` JSON body; for gRPC and gRPC-Web, a trailers-only
//! response.

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use tonic::Code;

/// The HTTP status for a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // 499 "client closed request", as Google and grpc-gateway use.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `google.rpc.Status` in its JSON form: `{"code":5,"message":"…","details":[]}`.
/// Details arrive encoded (`grpc-status-details-bin`); they are passed on as
/// `google.protobuf.Any` with the bytes in base64, since the gateway does not
/// know every detail type.
pub fn status_json(status: &tonic::Status) -> serde_json::Value {
    serde_json::json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": details(status.details()),
    })
}

fn details(encoded: &[u8]) -> Vec<serde_json::Value> {
    use prost::Message;
    let Ok(status) = tonic_status_proto::Status::decode(encoded) else {
        return Vec::new();
    };
    status
        .details
        .iter()
        .map(|any| {
            serde_json::json!({
                "@type": any.type_url,
                "value": base64::engine::general_purpose::STANDARD.encode(&any.value),
            })
        })
        .collect()
}

/// The google.rpc.Status message, only to read the details tonic carries.
mod tonic_status_proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<prost_types::Any>,
    }
}

/// A REST error response.
pub fn rest_error(status: &tonic::Status) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&status_json(status)).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = http_status(status.code());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A trailers-only gRPC response carrying `status`.
pub fn grpc_error<B: Default>(status: &tonic::Status) -> Response<B> {
    let mut response = Response::new(B::default());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    // Only fails for a message that is not a header value; the code alone then.
    let _ = status.add_header(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_http_status() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn the_body_is_a_google_rpc_status() {
        let json = status_json(&tonic::Status::not_found("no product 'x'"));
        assert_eq!(
            json,
            serde_json::json!({"code": 5, "message": "no product 'x'", "details": []})
        );
    }
}
