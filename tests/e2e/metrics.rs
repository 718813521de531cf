//! The sidecars' `/metrics` after real calls through an in-process sidecar
//! pair: request and response counters with their labels, a latency
//! histogram, a refused TLS handshake, an authorization denial and open
//! connections, in text a Prometheus scraper parses. And trace context from
//! outside in B3 reaching the app as W3C `traceparent`.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use meshwork_proto::echo::EchoRequest;
use tonic::{Code, Request};

use crate::support::{
    echo::{FAIL, FAIL_CODE},
    http,
    mesh::Mesh,
    tls::{self, Outcome},
};

const UNARY: &str = "meshwork.echo.v1.EchoService/Unary";

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        repeat: 0,
        payload: Vec::new(),
    }
}

async fn metrics(admin: SocketAddr) -> String {
    let (status, body) = http::get(admin, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    assert_exposition(&body);
    body
}

/// The value of the sample printed as `series` (name and labels exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Polls `/metrics` until `series` reaches `at_least` (responses are counted
/// when a stream ends, a moment after the client has its answer).
async fn wait_for_value(admin: SocketAddr, series: &str, at_least: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(admin).await;
        if sample(&text, series).is_some_and(|v| v >= at_least) || tokio::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks `text` against the OpenMetrics text grammar that Prometheus reads:
/// `# TYPE`/`# HELP`/`# UNIT` lines, samples of declared families with
/// well-formed names, labels and values, and `# EOF` last.
fn assert_exposition(text: &str) {
    let valid_name = |name: &str| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut families = HashSet::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(matches!(kind, "TYPE" | "HELP" | "UNIT"), "bad comment line {line:?}");
            assert!(valid_name(name), "bad family name in {line:?}");
            if kind == "TYPE" {
                let kind = parts.next().unwrap_or("");
                assert!(
                    matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "unknown" | "info" | "stateset"
                    ),
                    "bad type in {line:?}"
                );
                families.insert(name.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || matches!(value, "+Inf" | "-Inf" | "NaN"),
            "bad value in {line:?}"
        );
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (key, quoted) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(valid_name(key), "bad label name in {line:?}");
                    assert!(
                        !quoted.trim_end_matches('"').contains('"'),
                        "unescaped quote in {line:?}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "bad sample name in {line:?}");
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| families.contains(*f)))
            .unwrap_or(name);
        assert!(families.contains(family), "sample {name} of no declared family");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_refusals_and_connections() {
    let mesh = Mesh::start().await;
    let mut caller = mesh.caller_echo().await;
    for i in 0..3 {
        caller.unary(echo(&format!("m{i}"))).await.expect("unary");
    }
    let failed = caller.unary(echo(FAIL)).await.expect_err("fails");
    assert_eq!(failed.code(), FAIL_CODE);
    // The stranger may only call ServerStream.
    let denied = mesh.stranger_echo().await.unary(echo("x")).await.expect_err("denied");
    assert_eq!(denied.code(), Code::PermissionDenied);
    // A client without a certificate is refused at the handshake.
    let outcome = tls::connect(mesh.echo_inbound, tls::client_config(None)).await;
    assert!(matches!(outcome, Outcome::Refused(_)), "{outcome:?}");

    // The service's sidecar, inbound.
    let ok = format!(
        "meshwork_responses_total{{direction=\"inbound\",peer=\"caller\",method=\"{UNARY}\",grpc_status=\"0\"}}"
    );
    let text = wait_for_value(mesh.echo_admin, &ok, 3.0).await;
    let inbound = format!("direction=\"inbound\",peer=\"caller\",method=\"{UNARY}\"");
    assert_eq!(value(&text, &format!("meshwork_requests_total{{{inbound}}}")), 4.0);
    assert_eq!(value(&text, &ok), 3.0);
    let failed_series = format!(
        "meshwork_responses_total{{{inbound},grpc_status=\"{}\"}}",
        FAIL_CODE as i32
    );
    assert_eq!(value(&text, &failed_series), 1.0);
    assert_eq!(
        value(&text, &format!("meshwork_response_latency_seconds_count{{{inbound}}}")),
        4.0
    );
    assert_eq!(
        value(
            &text,
            &format!("meshwork_response_latency_seconds_bucket{{le=\"+Inf\",{inbound}}}")
        ),
        4.0
    );
    assert!(value(&text, &format!("meshwork_response_latency_seconds_sum{{{inbound}}}")) > 0.0);
    // The refusal: counted, and seen as a PERMISSION_DENIED response.
    assert_eq!(
        value(
            &text,
            &format!("meshwork_authz_denied_total{{caller=\"stranger\",method=\"{UNARY}\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "meshwork_responses_total{{direction=\"inbound\",peer=\"stranger\",method=\"{UNARY}\",grpc_status=\"7\"}}"
            )
        ),
        1.0
    );
    let handshake = wait_for_value(
        mesh.echo_admin,
        "meshwork_tls_handshake_failures_total{direction=\"inbound\",reason=\"no_client_certificate\"}",
        1.0,
    )
    .await;
    assert_eq!(
        value(
            &handshake,
            "meshwork_tls_handshake_failures_total{direction=\"inbound\",reason=\"no_client_certificate\"}"
        ),
        1.0
    );
    // The connections from the caller's and stranger's sidecars stay open.
    assert!(
        value(&text, "meshwork_open_connections{direction=\"inbound\"}") >= 2.0,
        "{text}"
    );
    assert!(
        text.contains("meshwork_spans_dropped_total{reason=\"queue_full\"}"),
        "{text}"
    );

    // The caller's sidecar, outbound: the destination is the peer.
    let outbound_ok = format!(
        "meshwork_responses_total{{direction=\"outbound\",peer=\"echo\",method=\"{UNARY}\",grpc_status=\"0\"}}"
    );
    let text = wait_for_value(mesh.caller_admin, &outbound_ok, 3.0).await;
    assert_eq!(
        value(
            &text,
            &format!("meshwork_requests_total{{direction=\"outbound\",peer=\"echo\",method=\"{UNARY}\"}}")
        ),
        4.0
    );
    assert_eq!(value(&text, &outbound_ok), 3.0);
    assert!(
        value(&text, "meshwork_open_connections{direction=\"outbound\"}") >= 1.0,
        "{text}"
    );

    // A path outside the contracts does not make a series of its own.
    let mut grpc = tonic::client::Grpc::new(mesh.caller_channel().await);
    grpc.ready().await.expect("ready");
    let _ = grpc
        .unary::<_, EchoRequest, _>(
            Request::new(echo("x")),
            ::http::uri::PathAndQuery::from_static("/meshwork.echo.v1.EchoService/NoSuchMethod"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    let text = wait_for_value(
        mesh.echo_admin,
        "meshwork_requests_total{direction=\"inbound\",peer=\"caller\",method=\"unknown\"}",
        1.0,
    )
    .await;
    assert!(!text.contains("NoSuchMethod"), "{text}");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_from_outside_reaches_the_app_as_traceparent() {
    let mesh = Mesh::start().await;
    let mut caller = mesh.caller_echo().await;
    let trace = "80f198ee56343ba864fe8b2a57d3eff7";
    for (name, value) in [
        ("b3", format!("{trace}-e457b5a2e4d86bd1-1")),
        ("x-b3-traceid", trace.to_string()),
    ] {
        let mut req = Request::new(echo("b3"));
        req.metadata_mut().insert(name, value.parse().expect("value"));
        if name == "x-b3-traceid" {
            req.metadata_mut()
                .insert("x-b3-spanid", "e457b5a2e4d86bd1".parse().expect("value"));
            req.metadata_mut().insert("x-b3-sampled", "1".parse().expect("value"));
        }
        let rsp = caller.unary(req).await.expect("unary");
        let seen = rsp
            .metadata()
            .get("x-echo-traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("the app got no traceparent ({name})"));
        let parts: Vec<&str> = seen.split('-').collect();
        assert_eq!(parts.len(), 4, "{seen}");
        assert_eq!(parts[1], trace, "{name}: {seen}");
        // The parent is the echo sidecar's server span, not the B3 caller's.
        assert_ne!(parts[2], "e457b5a2e4d86bd1", "{name}: {seen}");
        assert_eq!(parts[3], "01", "{name}: sampled");
    }
    mesh.shutdown().await;
}
