//! The gateway as a client outside the mesh meets it: the shop under
//! `mesh up`, called over REST/JSON, gRPC-Web and gRPC on the gateway's one
//! port, with real sockets. Each error mapping, the limits, CORS, and a
//! stream that fails midway are checked on the wire.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use base64::Engine;
use meshwork_proto::catalog::{
    ListProductsRequest, ListProductsResponse, catalog_service_client::CatalogServiceClient,
};
use nix::{sys::signal::Signal, unistd::Pid};
use prost::Message;

use crate::support::{
    mesh_process::{MeshProcess, pids, shop_config},
    rest::{get, header, http, parse, send},
};

const BASE: u16 = 22100;

struct Shop {
    _dir: tempfile::TempDir,
    mesh: MeshProcess,
    gateway: SocketAddr,
    admin: SocketAddr,
}

fn start(base: u16, edit: impl Fn(String) -> String) -> Shop {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), base);
    let text = edit(std::fs::read_to_string(&config).expect("read"));
    std::fs::write(&config, text).expect("write");
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(120));
    Shop {
        _dir: dir,
        mesh,
        gateway: SocketAddr::from(([127, 0, 0, 1], base + 80)),
        admin: SocketAddr::from(([127, 0, 0, 1], base + 90)),
    }
}

#[test]
fn rest_routes_errors_and_limits_of_the_shop() {
    let mut shop = start(BASE, |text| {
        text.replace(
            "[gateway.auth]",
            "[gateway.limits]\nheader_timeout = \"1s\"\nmax_body_bytes = 65536\n\n[gateway.auth]",
        )
    });
    let gw = shop.gateway;

    // Browse: query parameters into fields, camelCase names, int64 as strings.
    let (status, headers, page) = get(gw, "/v1/products?category=books&pageSize=2");
    assert_eq!(status, 200, "{page}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let products = page["products"].as_array().expect("products");
    assert_eq!(products.len(), 2, "{page}");
    assert!(products.iter().all(|p| p["category"] == "books"), "{page}");
    assert!(
        products[0]["price"]["amountMinor"].is_string(),
        "int64 is a string: {page}"
    );
    let token = page["nextPageToken"].as_str().expect("a next page");
    let (_, _, next) = get(gw, &format!("/v1/products?category=books&pageSize=2&pageToken={token}"));
    assert_ne!(next["products"][0]["id"], products[0]["id"], "the next page");
    // The same through the additional binding, with the original field names accepted.
    let (status, _, same) = get(gw, "/v1/categories/books/products?page_size=2");
    assert_eq!(status, 200);
    assert_eq!(same["products"], page["products"]);
    // A path variable, a repeated query parameter.
    let id = products[0]["id"].as_str().expect("id").to_string();
    let (status, _, product) = get(gw, &format!("/v1/products/{id}"));
    assert_eq!((status, &product["id"]), (200, &serde_json::json!(id)));
    let second = products[1]["id"].as_str().expect("id");
    let (status, _, batch) = get(
        gw,
        &format!("/v1/products:batchGet?productIds={second}&productIds={id}"),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["products"][0]["id"], second);
    assert_eq!(batch["products"][1]["id"], id.as_str());

    // Errors: the gRPC status as its HTTP status, google.rpc.Status as the body.
    let (status, _, body) = get(gw, "/v1/products/no-such-product");
    assert_eq!(status, 404);
    assert_eq!(body["code"], 5, "{body}");
    assert!(
        body["message"].as_str().expect("message").contains("no-such-product"),
        "{body}"
    );
    assert!(body["details"].is_array());
    let (status, _, body) = get(gw, "/v1/nowhere");
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("no route for GET /v1/nowhere"))
    );
    let (status, headers, _) = send(gw, "DELETE", &format!("/v1/products/{id}"), "");
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), Some("GET, PATCH"));
    let (status, _, body) = get(gw, "/v1/products?pageSize=five");
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("query parameter 'pageSize'"),
        "{body}"
    );
    let (status, _, body) = get(gw, "/v1/products?colour=red");
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().expect("message").contains("no field 'colour'"),
        "{body}"
    );

    // Register: body "*", a malformed body, an unknown field, a wrong type, a duplicate.
    let register = r#"{"email":"gw@example.com","password":"long enough","displayName":"Gee"}"#;
    let (status, _, user) = send(gw, "POST", "/v1/users", register);
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["user"]["email"], "gw@example.com");
    let (status, _, body) = send(gw, "POST", "/v1/users", register);
    assert_eq!((status, body["code"].as_i64()), (409, Some(6)), "{body}");
    let (status, _, body) = send(gw, "POST", "/v1/users", r#"{"email":"#);
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().expect("message").contains("not valid JSON"),
        "{body}"
    );
    let (status, _, body) = send(gw, "POST", "/v1/users", r#"{"emial":"x@y.z"}"#);
    assert_eq!(status, 400);
    assert!(body["message"].as_str().expect("message").contains("'emial'"), "{body}");
    let (status, _, body) = send(gw, "POST", "/v1/users", r#"{"display_name":7}"#);
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("field 'display_name'"),
        "{body}"
    );
    let (status, _, body) = send(
        gw,
        "POST",
        "/v1/login",
        r#"{"email":"gw@example.com","password":"wrong one"}"#,
    );
    assert_eq!((status, body["code"].as_i64()), (401, Some(16)), "{body}");

    // What needs a token says so, with a challenge.
    let (status, headers, body) = get(gw, "/v1/users/me/cart");
    assert_eq!(status, 401, "{body}");
    assert_eq!(header(&headers, "www-authenticate"), Some("Bearer realm=\"meshwork\""));

    // Limits: 413 for a large body, 431 for large headers, 408 for a slow client.
    let big = format!(r#"{{"email":"{}"}}"#, "x".repeat(70_000));
    let (status, _, body) = send(gw, "POST", "/v1/users", &big);
    assert_eq!(status, 413, "{body}");
    let (status, _, _) = http(
        gw,
        &format!(
            "GET /v1/products HTTP/1.1\r\nhost: shop\r\nx-big: {}\r\n\r\n",
            "y".repeat(20_000)
        ),
        b"",
    );
    assert_eq!(status, 431);
    let mut slow = TcpStream::connect(gw).expect("connect");
    slow.write_all(b"GET /v1/products HTTP/1.1\r\nhost: sh")
        .expect("half a head");
    let started = Instant::now();
    let mut raw = Vec::new();
    slow.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = slow.read_to_end(&mut raw);
    assert!(raw.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&raw));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after the header timeout"
    );

    // CORS: a preflight from an allowed origin is answered at the edge; another origin gets no grant.
    let preflight = |origin: &str| {
        http(
            gw,
            &format!(
                "OPTIONS /v1/users/me/cart/items HTTP/1.1\r\nhost: shop\r\nconnection: close\r\norigin: {origin}\r\naccess-control-request-method: POST\r\naccess-control-request-headers: authorization, content-type\r\n\r\n"
            ),
            b"",
        )
    };
    let (status, headers, _) = preflight("http://localhost:8080");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("http://localhost:8080")
    );
    assert!(header(&headers, "access-control-allow-headers").is_some_and(|h| h.contains("authorization")));
    assert_eq!(header(&headers, "access-control-max-age"), Some("600"));
    let (_, headers, _) = preflight("http://evil.example");
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    // The storefront's page is served at the root.
    let (status, headers, _) = http(gw, "GET / HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n", b"");
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").is_some_and(|t| t.starts_with("text/html")));

    // Monitoring: requests by route and status, auth failures by reason.
    let (status, _, metrics) = http(
        shop.admin,
        "GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(r#"gateway_requests_total{protocol="rest",rpc="shop.catalog.v1.CatalogService/GetProduct",http_status="404",grpc_status="5"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gateway_auth_failures_total{reason="missing"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_request_duration_seconds_bucket"), "{metrics}");
    // The access log has each request with its trace id.
    let line = shop
        .mesh
        .wait_for(r#""path":"/v1/products/no-such-product""#, Duration::from_secs(10));
    assert!(
        line.contains(r#""status":404"#) && line.contains(r#""trace_id":""#),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_grpc_web_and_a_stream_that_fails_midway() {
    let mut shop = start(BASE + 500, |text| text);
    let gw = shop.gateway;

    // Native gRPC from outside the mesh, on the same port.
    let channel = tonic::transport::Channel::from_shared(format!("http://{gw}"))
        .expect("uri")
        .connect()
        .await
        .expect("h2c to the gateway");
    let page = CatalogServiceClient::new(channel)
        .list_products(ListProductsRequest {
            page_size: 3,
            ..Default::default()
        })
        .await
        .expect("ListProducts over gRPC")
        .into_inner();
    assert_eq!(page.products.len(), 3);

    // gRPC-Web, binary and text, over HTTP/1.1: trailers come in the body.
    let request = ListProductsRequest {
        page_size: 2,
        ..Default::default()
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(request.len() as u32).to_be_bytes());
    framed.extend_from_slice(&request);
    let call = |content_type: &str, body: &[u8]| {
        http(
            gw,
            &format!(
                "POST /shop.catalog.v1.CatalogService/ListProducts HTTP/1.1\r\nhost: shop\r\nconnection: close\r\ncontent-type: {content_type}\r\naccept: {content_type}\r\nx-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
                body.len()
            ),
            body,
        )
    };
    let (status, headers, body) = call("application/grpc-web+proto", &framed);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/grpc-web+proto"));
    let (message, trailers) = grpc_web_frames(&body);
    assert_eq!(
        ListProductsResponse::decode(message.as_slice())
            .expect("decodes")
            .products
            .len(),
        2
    );
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let b64 = base64::engine::general_purpose::STANDARD;
    let (status, _, body) = call("application/grpc-web-text", b64.encode(&framed).as_bytes());
    assert_eq!(status, 200);
    // Each frame is encoded on its own, so padding may end a piece midway.
    let mut decoded = Vec::new();
    let text = String::from_utf8(body).expect("base64 is text");
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let end = match rest.find('=') {
            Some(i) => i + rest[i..].find(|c| c != '=').unwrap_or(rest.len() - i),
            None => rest.len(),
        };
        decoded.extend(b64.decode(&rest[..end]).expect("a base64 piece"));
        rest = &rest[end..];
    }
    let (message, trailers) = grpc_web_frames(&decoded);
    assert_eq!(
        ListProductsResponse::decode(message.as_slice())
            .expect("decodes")
            .products
            .len(),
        2
    );
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    // A method the gateway does not publish (the mesh does not let it call it).
    let (status, headers, _) = http(
        gw,
        "POST /shop.payments.v1.PaymentService/Charge HTTP/1.1\r\nhost: shop\r\nconnection: close\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: 5\r\n\r\n",
        &[0, 0, 0, 0, 0],
    );
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "grpc-status"), Some("12"), "{headers:?}");

    // A server stream over REST, as NDJSON then as SSE; it fails midway
    // when the catalog's app is killed, and says so in a last record.
    for (accept, first, error) in [
        ("application/x-ndjson", "{\"result\":", "{\"error\":"),
        ("text/event-stream", "event: message\ndata: ", "event: error\ndata: "),
    ] {
        let mut stream = TcpStream::connect(gw).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        write!(
            stream,
            "GET /v1/products:watch?productIds=book-ddia HTTP/1.1\r\nhost: shop\r\naccept: {accept}\r\nconnection: close\r\n\r\n"
        )
        .expect("request");
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&raw).contains(first) {
            let n = stream.read(&mut chunk).expect("the first record");
            assert!(
                n > 0,
                "ended before the first record: {}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&chunk[..n]);
        }
        // The table's pid at first, then the restarted one's.
        let output = shop.mesh.output();
        let app = output
            .lines()
            .rev()
            .find_map(|l| {
                l.strip_prefix("mesh: restarted catalog (pid ")?
                    .strip_suffix(')')?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| pids(&output, "catalog").0);
        nix::sys::signal::kill(Pid::from_raw(app), Signal::SIGKILL).expect("kill the catalog app");
        let _ = stream.read_to_end(&mut raw);
        let (status, headers, body) = parse(&raw);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-type"), Some(accept));
        let last = body.trim_end().rsplit('\n').next().unwrap_or_default();
        let last_record = body.trim_end().rsplit("\n\n").next().unwrap_or_default();
        assert!(
            body.contains(error) && (last.starts_with("{\"error\":") || last_record.starts_with("event: error")),
            "the stream ends with an error record:\n{body}"
        );
        // The launcher restarts the catalog; wait until it serves again.
        shop.mesh.wait_for("mesh: restarted catalog", Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(gw, "/v1/products/book-ddia").0 != 200 {
            assert!(Instant::now() < deadline, "the catalog came back");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A gRPC-Web body: the message frame and the trailers frame (flag 0x80).
fn grpc_web_frames(body: &[u8]) -> (Vec<u8>, String) {
    let (mut message, mut trailers, mut rest) = (Vec::new(), String::new(), body);
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let frame = &rest[5..5 + len];
        if rest[0] & 0x80 != 0 {
            trailers = String::from_utf8_lossy(frame).replace(' ', "");
        } else {
            message = frame.to_vec();
        }
        rest = &rest[5 + len..];
    }
    (message, trailers)
}
