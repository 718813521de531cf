//! Entry points for the fuzz targets in `fuzz/` and for the test that
//! replays their corpora on the stable toolchain (`tests/fuzz_corpus.rs`):
//! each parser that reads what the network sends, fed arbitrary bytes, with
//! the properties a parse must keep checked here, once for both. Not an API.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{body::RecvBody, options::Settings, server::Http2Server, shutdown};

/// A `grpc-timeout` value: parses or is refused, never panics; what parses
/// is at most 99,999,999 hours.
pub fn grpc_timeout(data: &[u8]) {
    if let Ok(timeout) = crate::outbound::parse_timeout(data) {
        assert!(timeout <= Duration::from_secs(99_999_999 * 3600));
    }
}

/// A request path: what parses is `/service/method`, both non-empty.
pub fn grpc_path(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(parsed) = crate::grpc::GrpcPath::parse(path) {
        assert_eq!(format!("/{}/{}", parsed.service, parsed.method), path);
    }
}

/// Trace-context headers (`traceparent`, `tracestate`, `baggage`, B3 single
/// and multi), split from `data` at NUL bytes: extracted, then injected
/// again, which must not panic whatever was read.
pub fn trace_headers(data: &[u8]) {
    const NAMES: [&str; 8] = [
        "traceparent",
        "tracestate",
        "baggage",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "x-b3-parentspanid",
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in NAMES.iter().zip(data.split(|&b| b == 0)) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(*name, value);
        }
    }
    let cx = meshwork_telemetry::propagation::extract(&headers);
    let mut out = HeaderMap::new();
    meshwork_telemetry::propagation::inject(&cx, &mut out);
    meshwork_telemetry::propagation::remove_b3(&mut headers);
}

/// The sidecar's HTTP/2 server fed `data` as a client's bytes over an
/// in-memory stream, answering every call with an empty 200: it must end
/// (by close, error or the handshake timeout) without panicking.
pub fn http2_server(data: &[u8]) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    runtime.block_on(async {
        let (mut client, server_io) = tokio::io::duplex(64 * 1024);
        let settings = Settings {
            handshake_timeout: Duration::from_millis(100),
            ..Settings::default()
        };
        let server = Http2Server::new(&settings);
        let (_trigger, shutdown) = shutdown::channel();
        let service = tower::service_fn(|_: http::Request<RecvBody>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
        let input = data.to_vec();
        let peer = async move {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            // Read what the server says until it closes, so it never blocks
            // on a full pipe.
            let mut sink = [0u8; 16 * 1024];
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let serve = server.serve(server_io, service, shutdown);
        let _ = tokio::time::timeout(Duration::from_secs(2), async { tokio::join!(serve, peer) }).await;
    });
}

/// A mesh.toml: parses or is refused with an error naming the file.
pub fn mesh_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = std::path::Path::new("fuzz/mesh.toml");
    if let Err(error) = meshwork_config::MeshConfig::parse(text, source) {
        assert!(error.to_string().starts_with("fuzz/mesh.toml"), "{error}");
    }
}
