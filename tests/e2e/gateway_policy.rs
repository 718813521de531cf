//! The gateway's traffic policy on the wire: rate limits shared by two
//! gateway replicas through a real Redis (killed and restarted midway),
//! the IETF draft's headers checked against the calls made, and the
//! response cache (hit, miss, 304, no-cache, coalescing, per-user privacy,
//! invalidation by a write, errors never stored), all under `mesh up` with
//! the shop.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use meshwork_proto::catalog::{GetProductRequest, catalog_service_client::CatalogServiceClient};
use prost::Message;

use crate::support::mesh_process::{MeshProcess, shop_config};

const LIMITS_BASE: u16 = 23100;
const CACHE_BASE: u16 = 23600;

/// A redis-server of the test's own, on loopback, keeping nothing on disk;
/// stopped when dropped.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let mut redis = Redis { port, child: None };
        redis.restart();
        redis
    }

    fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is running already");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/test installs Debian's redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pong() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} never answered PING",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pong(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&self.body).into()))
    }
}

/// One HTTP/1.1 exchange on a fresh connection, with extra header lines.
fn call(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n");
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body.as_bytes()).expect("write body");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let (status, headers, body) = crate::support::rest::parse(&raw);
    Reply { status, headers, body }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, "GET", path, &[], "")
}

/// The sum of every sample of `metric` whose labels contain all of `labels`.
fn metric(admin: SocketAddr, metric: &str, labels: &[&str]) -> f64 {
    let text = get(admin, "/metrics");
    assert_eq!(text.status, 200);
    String::from_utf8_lossy(&text.body)
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn start_shop(base: u16, policy: &str) -> (tempfile::TempDir, MeshProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), base);
    let text = std::fs::read_to_string(&config).expect("read");
    // Replica 1 of the gateway listens 5 ports above replica 0.
    let text = format!(
        "replica_port_step = 5\n{}",
        text.replace("[gateway.auth]", &format!("{policy}\n[gateway.auth]"))
    );
    std::fs::write(&config, text).expect("write");
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(180));
    (dir, mesh)
}

/// `"name";a=1;b=2` → the value of parameter `key` of the member named `name`.
fn sf_param(field: &str, name: &str, key: &str) -> Option<u64> {
    field
        .split(',')
        .map(str::trim)
        .find(|member| member.starts_with(&format!("\"{name}\"")))?
        .split(';')
        .skip(1)
        .find_map(|p| p.trim().strip_prefix(&format!("{key}="))?.parse().ok())
}

#[test]
fn two_gateway_replicas_share_one_limit_through_redis_and_ride_out_its_restart() {
    let mut redis = Redis::start(36379);
    let policy = r#"replicas = 2

[gateway.rate_limit_store]
redis = "redis://127.0.0.1:36379"
on_error = "open"

[[gateway.rate_limits]]
name = "products"
methods = ["shop.catalog.v1.CatalogService/GetProduct"]
key = "global"
rate = "5/m"
"#;
    let (dir, mesh) = start_shop(LIMITS_BASE, policy);
    let replicas = [
        SocketAddr::from(([127, 0, 0, 1], LIMITS_BASE + 80)),
        SocketAddr::from(([127, 0, 0, 1], LIMITS_BASE + 85)),
    ];
    let admins = [
        SocketAddr::from(([127, 0, 0, 1], LIMITS_BASE + 90)),
        SocketAddr::from(([127, 0, 0, 1], LIMITS_BASE + 95)),
    ];

    // Ten calls, alternating between the replicas: one limit of 5 a
    // minute lets exactly five through, not ten.
    let started = Instant::now();
    let mut allowed = 0;
    for i in 0..10u64 {
        let reply = get(replicas[i as usize % 2], "/v1/products/book-ddia");
        let policy = reply
            .header("ratelimit-policy")
            .expect("RateLimit-Policy on a limited response");
        assert_eq!(policy, "\"products\";q=5;w=60");
        let state = reply.header("ratelimit").expect("RateLimit on a limited response");
        let (r, t) = (
            sf_param(state, "products", "r").expect("r"),
            sf_param(state, "products", "t").expect("t"),
        );
        let elapsed = started.elapsed().as_secs();
        if i < 5 {
            assert_eq!(reply.status, 200, "call {i}: {}", reply.json());
            allowed += 1;
            // GCRA at 5/min: each call takes 12 s of the budget; r counts down
            // across both replicas, and t is when the budget is whole again.
            assert_eq!(r, 4 - i, "call {i}: {state}");
            let due = 12 * (i + 1);
            assert!(
                t <= due && t + elapsed + 1 >= due,
                "call {i}: t={t}, expected about {due}"
            );
        } else {
            assert_eq!(reply.status, 429, "call {i}: {}", reply.json());
            assert_eq!(r, 0, "{state}");
            let retry: u64 = reply
                .header("retry-after")
                .expect("Retry-After")
                .parse()
                .expect("seconds");
            assert!((1..=12).contains(&retry), "Retry-After {retry}");
            assert_eq!(reply.json()["code"], 8, "RESOURCE_EXHAUSTED: {}", reply.json());
        }
    }
    assert_eq!(allowed, 5);

    // Native gRPC counts against the same method: refused too, with the
    // same headers in the response's metadata.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let refused = runtime.block_on(async {
        let mut client = CatalogServiceClient::connect(format!("http://{}", replicas[1]))
            .await
            .expect("connect");
        client
            .get_product(GetProductRequest {
                product_id: "book-ddia".into(),
            })
            .await
            .expect_err("over the limit")
    });
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.metadata().get("retry-after").is_some(),
        "{:?}",
        refused.metadata()
    );
    assert!(
        refused.metadata().get("ratelimit").is_some(),
        "{:?}",
        refused.metadata()
    );
    let refusals: f64 = admins
        .iter()
        .map(|a| metric(*a, "gateway_rate_limit_decisions_total", &["outcome=\"refused\""]))
        .sum();
    assert_eq!(refusals, 6.0);

    // Redis goes away: the gateways fail open (as the file says), count
    // the errors, and say so once.
    redis.kill();
    for replica in replicas {
        let reply = get(replica, "/v1/products/book-ddia");
        assert_eq!(reply.status, 200, "fail open: {}", reply.json());
        assert!(reply.header("ratelimit").is_none());
    }
    let errors: f64 = admins
        .iter()
        .map(|a| metric(*a, "gateway_rate_limit_store_errors_total", &[]))
        .sum();
    assert!(errors >= 2.0, "store errors counted: {errors}");
    let open: f64 = admins
        .iter()
        .map(|a| {
            metric(
                *a,
                "gateway_rate_limit_decisions_total",
                &["outcome=\"store_error_open\""],
            )
        })
        .sum();
    assert!(open >= 2.0, "{open}");

    // It comes back (empty: nothing was saved): both gateways reconnect by
    // themselves and count from a whole budget again.
    redis.restart();
    for replica in replicas {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = get(replica, "/v1/products/book-ddia");
            if let Some(state) = reply.header("ratelimit") {
                assert_eq!(reply.status, 200);
                assert!(sf_param(state, "products", "r").is_some_and(|r| r <= 4), "{state}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {replica} never reconnected to redis"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(mesh);
    drop(dir);
    redis.kill();

    // `mesh up` runs the Redis itself when the file asks: the replicas
    // share it from the start.
    let local = policy.replace(
        "redis = \"redis://127.0.0.1:36379\"",
        "redis = \"local\"\nlocal_port = 36379",
    ) + "\n[[gateway.rate_limits]]\nname = \"lists\"\nmethods = [\"shop.catalog.v1.CatalogService/ListProducts\"]\nkey = \"global\"\nrate = \"1000/s\"\n";
    let (_dir, mesh) = start_shop(LIMITS_BASE, &local);
    assert!(mesh.output().contains("redis |"), "{}", mesh.output());
    // Both replicas have reached the Redis once a limited answer says so.
    for replica in replicas {
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(replica, "/v1/products?pageSize=1").header("ratelimit").is_none() {
            assert!(
                Instant::now() < deadline,
                "replica {replica} never reached the local redis"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let statuses: Vec<u16> = (0..10)
        .map(|i| get(replicas[i % 2], "/v1/products/book-ddia").status)
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 5, "{statuses:?}");
}

#[test]
fn the_cache_serves_hits_revalidates_coalesces_keeps_users_apart_and_forgets_on_writes() {
    let mut redis = Redis::start(36380);
    let policy = r#"
[gateway.rate_limit_store]
redis = "redis://127.0.0.1:36380"
on_error = "closed"

[[gateway.rate_limits]]
methods = ["shop.catalog.v1.CatalogService/ListProducts"]
key = "client"
rate = "1000/s"

[[gateway.cache]]
methods = ["shop.catalog.v1.CatalogService/GetProduct", "shop.catalog.v1.CatalogService/ListProducts"]
ttl = "30s"

[[gateway.cache]]
methods = ["shop.cart.v1.CartService/GetCart"]
ttl = "60s"

[[gateway.cache]]
methods = ["shop.catalog.v1.CatalogService/BatchGetProducts"]
ttl = "1s"
stale_if_error = "60s"
"#;
    let (dir, _mesh) = start_shop(CACHE_BASE, policy);
    let gw = SocketAddr::from(([127, 0, 0, 1], CACHE_BASE + 80));
    let admin = SocketAddr::from(([127, 0, 0, 1], CACHE_BASE + 90));
    // The catalog's sidecar counts what reaches the catalog.
    let catalog_admin = SocketAddr::from(([127, 0, 0, 1], CACHE_BASE + 302));
    let upstream = |method: &str| {
        metric(
            catalog_admin,
            "meshwork_requests_total",
            &[
                "direction=\"inbound\"",
                &format!("method=\"shop.catalog.v1.CatalogService/{method}\""),
            ],
        )
    };

    // Miss, then hit: same body, same ETag, one call upstream.
    let before = upstream("GetProduct");
    let first = get(gw, "/v1/products/book-ddia");
    assert_eq!(first.status, 200, "{}", first.json());
    assert_eq!(first.header("cache-status"), Some("meshwork; fwd=miss; stored"));
    assert_eq!(first.header("cache-control"), Some("public, max-age=30"));
    let etag = first.header("etag").expect("ETag").to_string();
    let second = get(gw, "/v1/products/book-ddia");
    assert_eq!(second.status, 200);
    assert!(
        second
            .header("cache-status")
            .is_some_and(|s| s.starts_with("meshwork; hit; ttl=")),
        "{:?}",
        second.headers
    );
    assert_eq!(second.header("etag"), Some(etag.as_str()));
    assert_eq!(second.body, first.body);
    assert_eq!(upstream("GetProduct") - before, 1.0);

    // If-None-Match: 304, no body; no-cache: a fresh call upstream.
    let revalidated = call(gw, "GET", "/v1/products/book-ddia", &[("if-none-match", &etag)], "");
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.body.is_empty());
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
    let fresh = call(
        gw,
        "GET",
        "/v1/products/book-ddia",
        &[("cache-control", "no-cache")],
        "",
    );
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("cache-status"), Some("meshwork; fwd=request; stored"));
    assert_eq!(upstream("GetProduct") - before, 2.0);

    // Native gRPC asking the same thing is served the REST call's entry,
    // and a REST call is served a gRPC call's: one key, the canonical request.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let grpc_get = |id: &str| {
        runtime.block_on(async {
            let mut client = CatalogServiceClient::connect(format!("http://{gw}"))
                .await
                .expect("connect");
            let answer = client
                .get_product(GetProductRequest { product_id: id.into() })
                .await
                .expect("GetProduct over gRPC");
            let status = answer
                .metadata()
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (answer.into_inner(), status)
        })
    };
    let before = upstream("GetProduct");
    let (product, status) = grpc_get("book-ddia");
    assert_eq!(product.id, "book-ddia");
    assert!(status.starts_with("meshwork; hit"), "{status}");
    assert_eq!(upstream("GetProduct") - before, 0.0);
    let page = get(gw, "/v1/products?pageSize=5").json();
    let other = page["products"]
        .as_array()
        .expect("products")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .find(|id| *id != "book-ddia")
        .expect("another product")
        .to_string();
    let (product, status) = grpc_get(&other);
    assert_eq!(
        (product.id.as_str(), status.as_str()),
        (other.as_str(), "meshwork; fwd=miss; stored")
    );
    let rest = get(gw, &format!("/v1/products/{other}"));
    assert!(
        rest.header("cache-status")
            .is_some_and(|s| s.starts_with("meshwork; hit")),
        "{:?}",
        rest.headers
    );
    assert_eq!(upstream("GetProduct") - before, 1.0);

    // gRPC-Web (tonic-web around the same path) is served the same entry.
    let request = GetProductRequest {
        product_id: "book-ddia".into(),
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(request.len() as u32).to_be_bytes());
    frame.extend_from_slice(&request);
    let mut stream = TcpStream::connect(gw).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    write!(
        stream,
        "POST /shop.catalog.v1.CatalogService/GetProduct HTTP/1.1\r\nhost: shop\r\nconnection: close\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: {}\r\n\r\n",
        frame.len()
    )
    .expect("head");
    stream.write_all(&frame).expect("body");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.contains("cache-status: meshwork; hit"), "{text}");
    assert!(text.contains("grpc-status:0"), "{text}");
    assert!(text.contains("book-ddia"), "{text}");
    assert_eq!(upstream("GetProduct") - before, 1.0);

    // Errors are never stored: each 404 goes upstream.
    let before = upstream("GetProduct");
    for _ in 0..2 {
        let missing = get(gw, "/v1/products/no-such-product");
        assert_eq!(missing.status, 404);
        assert!(missing.header("cache-status").is_none());
    }
    assert_eq!(upstream("GetProduct") - before, 2.0);

    // Twenty concurrent misses of one key: one call upstream.
    let before = upstream("ListProducts");
    let barrier = Arc::new(Barrier::new(20));
    let bodies: Vec<Vec<u8>> = (0..20)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let reply = get(gw, "/v1/products?category=books&pageSize=3");
                assert_eq!(reply.status, 200, "{}", reply.json());
                reply.body
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("a caller"))
        .collect();
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    assert_eq!(
        upstream("ListProducts") - before,
        1.0,
        "one upstream call for 20 concurrent misses"
    );
    let misses = metric(admin, "gateway_cache_misses_total", &[]);
    let coalesced = metric(admin, "gateway_cache_coalesced_total", &[]);
    let hits = metric(admin, "gateway_cache_hits_total", &[]);
    println!("cache: {hits} hits, {misses} misses, {coalesced} coalesced");
    assert!(metric(admin, "gateway_cache_bytes", &[]) > 0.0);

    // Two users: private answers are per user, and a write shows at once.
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for who in ["ann", "bob"] {
        let email = format!("{who}@policy.example");
        let registered = call(
            gw,
            "POST",
            "/v1/users",
            &[],
            &format!(r#"{{"email":"{email}","password":"long enough","displayName":"{who}"}}"#),
        );
        assert_eq!(registered.status, 200, "{}", registered.json());
        ids.push(registered.json()["user"]["id"].as_str().expect("id").to_string());
        let login = call(
            gw,
            "POST",
            "/v1/login",
            &[],
            &format!(r#"{{"email":"{email}","password":"long enough"}}"#),
        );
        assert_eq!(login.status, 200, "{}", login.json());
        tokens.push(format!(
            "Bearer {}",
            login.json()["accessToken"].as_str().expect("token")
        ));
    }
    let ann_cart = format!("/v1/users/{}/cart", ids[0]);
    let as_ann = [("authorization", tokens[0].as_str())];
    let as_bob = [("authorization", tokens[1].as_str())];
    let cart = call(gw, "GET", &ann_cart, &as_ann, "");
    assert_eq!(cart.status, 200, "{}", cart.json());
    assert_eq!(cart.header("cache-control"), Some("private, max-age=60"));
    assert_eq!(cart.header("cache-status"), Some("meshwork; fwd=miss; stored"));
    let again = call(gw, "GET", &ann_cart, &as_ann, "");
    assert!(again.header("cache-status").is_some_and(|s| s.contains("hit")));
    // Bob asking for the same message never gets Ann's entry: the cart
    // service refuses him.
    let bob = call(gw, "GET", &ann_cart, &as_bob, "");
    assert_eq!(bob.status, 403, "{}", bob.json());
    // Ann adds an item; her next read is a miss that shows it.
    let added = call(
        gw,
        "POST",
        &format!("/v1/users/{}/cart/items", ids[0]),
        &as_ann,
        r#"{"productId":"book-ddia","quantity":2}"#,
    );
    assert_eq!(added.status, 200, "{}", added.json());
    let after = call(gw, "GET", &ann_cart, &as_ann, "");
    assert_eq!(after.header("cache-status"), Some("meshwork; fwd=miss; stored"));
    assert_eq!(after.json()["items"][0]["productId"], "book-ddia", "{}", after.json());
    assert_eq!(after.json()["items"][0]["quantity"], 2, "{}", after.json());

    // Ann prefers euros: the catalog prices her reads in EUR, under a key of
    // their own and marked private; the shared USD entry is untouched, and
    // her checkout is charged in EUR.
    let set = call(
        gw,
        "PUT",
        "/v1/users/me/preferences",
        &as_ann,
        r#"{"locale":"de-DE","currency":"EUR"}"#,
    );
    assert_eq!(set.status, 200, "{}", set.json());
    let amount = |reply: &Reply| -> (String, i64) {
        let price = &reply.json()["price"];
        let minor = price["amountMinor"].as_str().expect("int64 as a string");
        (
            price["currencyCode"].as_str().expect("currency").to_string(),
            minor.parse().expect("a number"),
        )
    };
    let anonymous = get(gw, "/v1/products/book-ddia");
    let (currency, usd) = amount(&anonymous);
    assert_eq!(currency, "USD");
    let in_euros = call(gw, "GET", "/v1/products/book-ddia", &as_ann, "");
    assert_eq!(in_euros.status, 200, "{}", in_euros.json());
    assert_eq!(amount(&in_euros), ("EUR".to_string(), (usd * 92 + 50) / 100));
    assert_eq!(in_euros.header("cache-status"), Some("meshwork; fwd=miss; stored"));
    assert_eq!(in_euros.header("cache-control"), Some("private, max-age=30"));
    let again = call(gw, "GET", "/v1/products/book-ddia", &as_ann, "");
    assert!(
        again.header("cache-status").is_some_and(|s| s.contains("hit")),
        "{:?}",
        again.headers
    );
    assert_eq!(again.body, in_euros.body);
    let anonymous = get(gw, "/v1/products/book-ddia");
    assert_eq!(
        amount(&anonymous),
        ("USD".to_string(), usd),
        "the shared entry is in dollars"
    );
    assert_eq!(anonymous.header("cache-control"), Some("public, max-age=30"));
    let order = call(gw, "POST", "/v1/users/me/cart:checkout", &as_ann, "{}");
    assert_eq!(order.status, 200, "{}", order.json());
    let total = &order.json()["total"];
    assert_eq!(total["currencyCode"], "EUR", "{total}");
    assert_eq!(
        total["amountMinor"],
        (2 * ((usd * 92 + 50) / 100)).to_string(),
        "{total}"
    );

    // Stale-if-error: past its 1 s TTL the answer stands in while the
    // catalog cannot answer (a fault in mesh.toml, which the sidecars
    // follow), marked stale; once it answers again, a fresh one replaces it.
    let batch = "/v1/products:batchGet?productIds=book-ddia";
    let first = get(gw, batch);
    assert_eq!(first.header("cache-status"), Some("meshwork; fwd=miss; stored"));
    let config = dir.path().join("mesh.toml");
    let healthy = std::fs::read_to_string(&config).expect("read mesh.toml");
    let faulty = healthy.replacen(
        "[services.catalog]\n",
        "[services.catalog]\nfaults = [{ methods = [\"BatchGetProducts\"], abort = { percent = 100, status = \"UNAVAILABLE\" } }]\n",
        1,
    );
    std::fs::write(&config, faulty).expect("write the fault");
    let deadline = Instant::now() + Duration::from_secs(15);
    // no-cache goes upstream and is never covered: it tells when the fault is on.
    while call(gw, "GET", batch, &[("cache-control", "no-cache")], "").status != 503 {
        assert!(Instant::now() < deadline, "the catalog's fault never took hold");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1100)); // past the TTL
    let stale = get(gw, batch);
    assert_eq!(stale.status, 200, "{}", stale.json());
    assert!(
        stale
            .header("cache-status")
            .is_some_and(|s| s.ends_with("; detail=stale")),
        "{:?}",
        stale.headers
    );
    assert_eq!(stale.body, first.body);
    assert_eq!(metric(admin, "gateway_cache_stale_total", &[]), 1.0);
    std::fs::write(&config, &healthy).expect("lift the fault");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let again = get(gw, batch);
        if again.header("cache-status") == Some("meshwork; fwd=miss; stored") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the catalog never answered again: {:?}",
            again.headers
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The limited method's store goes away and the file says fail closed:
    // 503 with Retry-After; calls without a limit are untouched.
    redis.kill();
    let closed = get(gw, "/v1/products?category=books&pageSize=3");
    assert_eq!(closed.status, 503, "{}", closed.json());
    assert_eq!(closed.header("retry-after"), Some("1"));
    assert_eq!(get(gw, "/v1/products/book-ddia").status, 200);
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(gw, "/v1/products?category=books&pageSize=3").status != 200 {
        assert!(Instant::now() < deadline, "the gateway never reconnected to redis");
        std::thread::sleep(Duration::from_millis(200));
    }
}
