//! Who calls through the gateway, end to end: users of the shop register
//! and log in over REST, their tokens are verified at the edge, each reaches
//! only their own cart and orders whichever protocol they use, a role is
//! needed where mesh.toml says so, a forged token is refused, and a checkout
//! through the gateway is one trace from the edge to payments.

use std::time::Duration;

use meshwork_proto::cart::{GetCartRequest, cart_service_client::CartServiceClient};
use tonic::{Code, metadata::MetadataValue};

use crate::support::{
    mesh_process::{MeshProcess, shop_config},
    otlp::Collector,
    rest::{call, get, header, http, json, send},
};

const BASE: u16 = 26600;

struct User {
    id: String,
    token: String,
}

fn sign_up(gw: std::net::SocketAddr, email: &str) -> User {
    let body = format!(r#"{{"email":"{email}","password":"long enough","displayName":"{email}"}}"#);
    let (status, _, registered) = send(gw, "POST", "/v1/users", &body);
    assert_eq!(status, 200, "{registered}");
    let (status, _, login) = send(
        gw,
        "POST",
        "/v1/login",
        &format!(r#"{{"email":"{email}","password":"long enough"}}"#),
    );
    assert_eq!(status, 200, "{login}");
    User {
        id: registered["user"]["id"].as_str().expect("id").to_string(),
        token: login["accessToken"].as_str().expect("token").to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_reach_only_their_own_data_and_a_checkout_is_one_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), BASE);
    let text = std::fs::read_to_string(&config).expect("read").replace(
        "grpc_services = [\"shop.users.v1.UserService\"]",
        "grpc_services = [\"shop.users.v1.UserService\"]\nenv = { MESH_USERS_ADMIN_EMAILS = \"boss@example.com\" }",
    );
    std::fs::write(&config, text).expect("write");
    let collector = Collector::start();
    let mut mesh = MeshProcess::start_with_env(
        &["up", "--config", config.to_str().expect("utf-8")],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    mesh.wait_for("mesh: up", Duration::from_secs(120));
    let gw = std::net::SocketAddr::from(([127, 0, 0, 1], BASE + 80));

    let alice = sign_up(gw, "alice@example.com");
    let bob = sign_up(gw, "bob@example.com");

    // `me` is the token's user; the cart fills and checks out over REST.
    let (status, _, cart) = call(
        gw,
        "POST",
        "/v1/users/me/cart/items",
        &alice.token,
        r#"{"productId":"book-ddia","quantity":2}"#,
    );
    assert_eq!(status, 200, "{cart}");
    assert_eq!(cart["userId"], alice.id.as_str());
    let (_, _, cart) = call(gw, "GET", "/v1/users/me/cart", &alice.token, "");
    assert_eq!(cart["items"][0]["quantity"], 2, "{cart}");
    let (status, _, removed) = call(gw, "DELETE", "/v1/users/me/cart/items/book-ddia", &alice.token, "");
    assert_eq!((status, &removed["items"]), (200, &serde_json::json!([])), "{removed}");
    call(
        gw,
        "POST",
        "/v1/users/me/cart/items",
        &alice.token,
        r#"{"productId":"book-ddia","quantity":1}"#,
    );
    // A caller's W3C context is continued: the checkout is one trace with it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = "{}";
    let (status, _, order) = {
        let (status, headers, raw) = http(
            gw,
            &format!(
                "POST /v1/users/me/cart:checkout HTTP/1.1\r\nhost: shop\r\nconnection: close\r\nauthorization: Bearer {}\r\ntraceparent: 00-{trace_id}-00f067aa0ba902b7-01\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                alice.token,
                body.len()
            ),
            b"",
        );
        (status, headers, json(&raw))
    };
    assert_eq!(status, 200, "{order}");
    // response_body: "order" answers the Order itself.
    assert_eq!(order["userId"], alice.id.as_str(), "{order}");
    assert_eq!(order["status"], "ORDER_STATUS_PAID", "{order}");
    let order_id = order["id"].as_str().expect("order id").to_string();
    let (_, _, orders) = call(gw, "GET", "/v1/users/me/orders", &alice.token, "");
    assert_eq!(orders["orders"][0]["id"], order_id.as_str(), "{orders}");
    let (status, _, again) = call(gw, "POST", "/v1/users/me/cart:checkout", &alice.token, "{}");
    assert_eq!(
        (status, again["code"].as_i64()),
        (400, Some(9)),
        "an empty cart: {again}"
    );

    // Another user's data is refused by the service, whichever way asked.
    let (status, _, refused) = call(gw, "GET", &format!("/v1/users/{}/cart", alice.id), &bob.token, "");
    assert_eq!((status, refused["code"].as_i64()), (403, Some(7)), "{refused}");
    let (status, _, refused) = call(gw, "GET", &format!("/v1/orders/{order_id}"), &bob.token, "");
    assert_eq!(status, 403, "{refused}");
    let (status, _, mine) = call(gw, "GET", &format!("/v1/orders/{order_id}"), &alice.token, "");
    assert_eq!((status, &mine["id"]), (200, &serde_json::json!(order_id)), "{mine}");
    let channel = tonic::transport::Channel::from_shared(format!("http://{gw}"))
        .expect("uri")
        .connect()
        .await
        .expect("h2c");
    let mut grpc = CartServiceClient::new(channel);
    let mut asking = tonic::Request::new(GetCartRequest {
        user_id: alice.id.clone(),
    });
    let bearer: MetadataValue<_> = format!("Bearer {}", bob.token).parse().expect("metadata");
    asking.metadata_mut().insert("authorization", bearer);
    let denied = grpc.get_cart(asking).await.expect_err("bob's token for alice's cart");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let unsigned = grpc
        .get_cart(GetCartRequest {
            user_id: alice.id.clone(),
        })
        .await
        .expect_err("no token");
    assert_eq!(unsigned.code(), Code::Unauthenticated, "{unsigned:?}");
    // A header from outside claiming to be alice is overwritten, never believed.
    let (status, _, spoofed) = {
        let (status, headers, raw) = http(
            gw,
            &format!(
                "GET /v1/users/{}/cart HTTP/1.1\r\nhost: shop\r\nconnection: close\r\nauthorization: Bearer {}\r\nx-mesh-user: {}\r\n\r\n",
                alice.id, bob.token, alice.id
            ),
            b"",
        );
        (status, headers, json(&raw))
    };
    assert_eq!(status, 403, "{spoofed}");

    // A role where mesh.toml asks for one.
    let (status, _, body) = call(gw, "PATCH", "/v1/products/book-ddia", &alice.token, r#"{"stock":7}"#);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("needs the role 'admin'"),
        "{body}"
    );
    let boss = sign_up(gw, "boss@example.com");
    let (status, _, product) = call(gw, "PATCH", "/v1/products/book-ddia", &boss.token, r#"{"stock":7}"#);
    assert_eq!((status, &product["stock"]), (200, &serde_json::json!(7)), "{product}");

    // A token signed with another key under a known kid is refused, with a challenge.
    let forged = forge(&alice.token);
    let (status, headers, body) = call(gw, "GET", "/v1/users/me/cart", &forged, "");
    assert_eq!(status, 401, "{body}");
    let challenge = header(&headers, "www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with("Bearer realm=\"meshwork\", error=\"invalid_token\""),
        "{challenge}"
    );
    let (status, _, body) = call(gw, "GET", "/v1/users/me/cart", "not-a-jwt", "");
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = get(gw, "/v1/products/book-ddia");
    assert_eq!(status, 200, "public routes need no token");

    // The routes not walked above, over REST.
    let (status, _, me) = call(gw, "GET", "/v1/users/me", &alice.token, "");
    assert_eq!((status, &me["id"]), (200, &serde_json::json!(alice.id)), "{me}");
    let (status, _, me) = call(
        gw,
        "PUT",
        "/v1/users/me/preferences",
        &alice.token,
        r#"{"locale":"de-DE","currency":"EUR"}"#,
    );
    assert_eq!(
        (status, &me["preferences"]["currency"]),
        (200, &serde_json::json!("EUR")),
        "body: \"preferences\": {me}"
    );
    let (status, _, jwks) = get(gw, "/.well-known/jwks.json");
    assert_eq!(
        (status, &jwks["keys"][0]["kty"]),
        (200, &serde_json::json!("OKP")),
        "{jwks}"
    );
    let (status, _, refunded) = call(gw, "POST", &format!("/v1/orders/{order_id}:refund"), &boss.token, "{}");
    assert_eq!(status, 403, "an admin too refunds only their own orders: {refunded}");

    // Every unary method the gateway publishes, over gRPC and gRPC-Web too.
    every_method_over_grpc_and_grpc_web(gw, &alice, &boss).await;

    // One trace from the edge to payments, continuing the caller's context.
    collector.wait_until(Duration::from_secs(30), |spans| {
        let services: Vec<&str> = spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .map(|s| s.service.as_str())
            .collect();
        for service in [
            "gateway",
            "gateway-proxy",
            "cart-proxy",
            "cart",
            "catalog",
            "payments-proxy",
            "payments",
        ] {
            if !services.contains(&service) {
                return Err(format!("{service} is not in the checkout's trace: {services:?}"));
            }
        }
        Ok(())
    });
}

/// The same claims and `kid` as `token`, signed with a key of our own.
fn forge(token: &str) -> String {
    let mut parts = token.split('.');
    let (head, claims) = (parts.next().expect("header"), parts.next().expect("claims"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("an Ed25519 key");
    let pem = key.serialize_pem();
    let encoding = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).expect("signing key");
    let message = format!("{head}.{claims}");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &encoding, jsonwebtoken::Algorithm::EdDSA).expect("signed");
    format!("{message}.{signature}")
}

/// The gateway's public port over TLS with its own certificate: ALPN gives
/// HTTP/2 to a client that offers it and HTTP/1.1 to one that does not, on
/// the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_the_public_port_with_alpn() {
    use http_body_util::{BodyExt, Empty};
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().expect("tempdir");
    let base = 21600;
    let config = shop_config(dir.path(), base);
    let issued = rcgen::generate_simple_self_signed(vec!["shop.localhost".to_string()]).expect("certificate");
    std::fs::write(dir.path().join("edge.crt"), issued.cert.pem()).expect("write cert");
    std::fs::write(dir.path().join("edge.key"), issued.signing_key.serialize_pem()).expect("write key");
    let text = std::fs::read_to_string(&config).expect("read").replace(
        "[gateway]\n",
        "[gateway]\ntls = { cert = \"edge.crt\", key = \"edge.key\" }\n",
    );
    std::fs::write(&config, text).expect("write");
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(120));
    let gw = std::net::SocketAddr::from(([127, 0, 0, 1], base + 80));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(issued.cert.der().to_vec()))
        .expect("root");
    let connect = |alpn: Vec<Vec<u8>>| {
        let roots = roots.clone();
        async move {
            let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = alpn;
            let tcp = tokio::net::TcpStream::connect(gw).await.expect("connect");
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(ServerName::try_from("shop.localhost").expect("name"), tcp)
                .await
                .expect("the gateway's certificate is trusted")
        }
    };

    // HTTP/2 by ALPN.
    let tls = connect(vec![b"h2".to_vec(), b"http/1.1".to_vec()]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP/2 over TLS");
    tokio::spawn(conn);
    let request = http::Request::get("https://shop.localhost/v1/products/book-ddia")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(json(&body)["id"], "book-ddia");

    // HTTP/1.1 for a client that offers only it.
    let mut tls = connect(vec![b"http/1.1".to_vec()]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET /v1/products/book-ddia HTTP/1.1\r\nhost: shop.localhost\r\nconnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"id\":\"book-ddia\""), "{text}");

    // Plaintext is not served on a TLS port.
    let mut plain = tokio::net::TcpStream::connect(gw).await.expect("connect");
    plain
        .write_all(b"GET /v1/products/book-ddia HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut raw)).await;
    assert!(!raw.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw));
}

/// Calls each of the shop's published unary methods natively over gRPC (h2c)
/// and over gRPC-Web (HTTP/1.1), with the token of `user` (or `admin` where a
/// role is needed); each answers OK both ways.
async fn every_method_over_grpc_and_grpc_web(gw: std::net::SocketAddr, user: &User, admin: &User) {
    use meshwork_contracts::dynamic::DynamicCodec;
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage};

    let pool = DescriptorPool::decode(meshwork_proto::FILE_DESCRIPTOR_SET).expect("contracts");
    let channel = tonic::transport::Channel::from_shared(format!("http://{gw}"))
        .expect("uri")
        .connect()
        .await
        .expect("h2c");
    let id = &user.id;
    for protocol in ["grpc", "grpc-web"] {
        // A fresh order per protocol, for the order methods.
        let email = format!("{protocol}@example.com");
        let calls: Vec<(&str, String, &User)> = vec![
            (
                "shop.users.v1.UserService/Register",
                format!(r#"{{"email":"{email}","password":"long enough"}}"#),
                user,
            ),
            (
                "shop.users.v1.UserService/Login",
                format!(r#"{{"email":"{email}","password":"long enough"}}"#),
                user,
            ),
            (
                "shop.users.v1.UserService/GetUser",
                format!(r#"{{"userId":"{id}"}}"#),
                user,
            ),
            (
                "shop.users.v1.UserService/UpdatePreferences",
                format!(r#"{{"userId":"{id}","preferences":{{"locale":"en-GB","currency":"GBP"}}}}"#),
                user,
            ),
            ("shop.users.v1.UserService/GetJwks", "{}".into(), user),
            (
                "shop.catalog.v1.CatalogService/ListProducts",
                r#"{"pageSize":2}"#.into(),
                user,
            ),
            (
                "shop.catalog.v1.CatalogService/GetProduct",
                r#"{"productId":"book-ddia"}"#.into(),
                user,
            ),
            (
                "shop.catalog.v1.CatalogService/BatchGetProducts",
                r#"{"productIds":["book-ddia"]}"#.into(),
                user,
            ),
            (
                "shop.catalog.v1.CatalogService/UpdateProduct",
                r#"{"productId":"book-ddia","stock":50}"#.into(),
                admin,
            ),
            (
                "shop.cart.v1.CartService/AddItem",
                format!(r#"{{"userId":"{id}","productId":"book-ddia","quantity":1}}"#),
                user,
            ),
            (
                "shop.cart.v1.CartService/GetCart",
                format!(r#"{{"userId":"{id}"}}"#),
                user,
            ),
            (
                "shop.cart.v1.CartService/RemoveItem",
                format!(r#"{{"userId":"{id}","productId":"book-ddia"}}"#),
                user,
            ),
            (
                "shop.cart.v1.CartService/AddItem",
                format!(r#"{{"userId":"{id}","productId":"book-ddia","quantity":1}}"#),
                user,
            ),
            (
                "shop.cart.v1.CartService/Checkout",
                format!(r#"{{"userId":"{id}"}}"#),
                user,
            ),
            (
                "shop.payments.v1.PaymentService/ListOrders",
                format!(r#"{{"userId":"{id}"}}"#),
                user,
            ),
        ];
        let mut last_order = String::new();
        let order_calls = ["GetOrder", "Refund"].map(|m| (format!("shop.payments.v1.PaymentService/{m}"), user));
        for (path, request, who) in calls
            .iter()
            .map(|(p, r, w)| (p.to_string(), r.clone(), *w))
            .chain(order_calls.iter().map(|(p, w)| (p.clone(), String::new(), *w)))
        {
            let method = pool
                .get_service_by_name(path.split('/').next().expect("service"))
                .and_then(|s| s.methods().find(|m| Some(m.name()) == path.split('/').nth(1)))
                .expect("a method of the contracts");
            let request = if request.is_empty() {
                format!(r#"{{"orderId":"{last_order}"}}"#)
            } else {
                request
            };
            let mut deserializer = serde_json::Deserializer::from_str(&request);
            let message = DynamicMessage::deserialize(method.input(), &mut deserializer).expect("request JSON");
            let answer: DynamicMessage = if protocol == "grpc" {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.expect("ready");
                let mut call = tonic::Request::new(message);
                let bearer: MetadataValue<_> = format!("Bearer {}", who.token).parse().expect("metadata");
                call.metadata_mut().insert("authorization", bearer);
                grpc.unary(
                    call,
                    format!("/{path}").parse().expect("path"),
                    DynamicCodec(method.output()),
                )
                .await
                .unwrap_or_else(|e| panic!("{path} over gRPC: {e:?}"))
                .into_inner()
            } else {
                let body = message.encode_to_vec();
                let mut framed = vec![0u8];
                framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
                framed.extend_from_slice(&body);
                let (status, _, raw) = http(
                    gw,
                    &format!(
                        "POST /{path} HTTP/1.1\r\nhost: shop\r\nconnection: close\r\nauthorization: Bearer {}\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: {}\r\n\r\n",
                        who.token,
                        framed.len()
                    ),
                    &framed,
                );
                assert_eq!(status, 200, "{path} over gRPC-Web");
                let (frame, trailers) = grpc_web_frames(&raw);
                assert!(trailers.contains("grpc-status:0"), "{path} over gRPC-Web: {trailers}");
                DynamicMessage::decode(method.output(), frame.as_slice()).expect("the answer decodes")
            };
            if path.ends_with("/Checkout") {
                let json = serde_json::to_value(&answer).expect("JSON");
                last_order = json["order"]["id"].as_str().expect("an order").to_string();
            }
        }
    }
}

/// A gRPC-Web body: its message frame and its trailers frame (flag 0x80).
fn grpc_web_frames(body: &[u8]) -> (Vec<u8>, String) {
    let (mut message, mut trailers, mut rest) = (Vec::new(), String::new(), body);
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let frame = &rest[5..(5 + len).min(rest.len())];
        if rest[0] & 0x80 != 0 {
            trailers = String::from_utf8_lossy(frame).replace(' ', "");
        } else {
            message = frame.to_vec();
        }
        rest = &rest[(5 + len).min(rest.len())..];
    }
    (message, trailers)
}
