//! The dashboard of `mesh up --demo`, as a user and a browser see it: its
//! figures agree with the sidecars' own counters for the calls the demo
//! made, the checkout's trace arrives at the launcher's own collector with
//! every span under the right parent, `mesh stat` and `mesh trace` print
//! them, and headless Chromium (WebDriver) sees every workload ready, the
//! checkout drawn as a waterfall and an edge turn red once mesh.toml injects
//! a fault.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::child::output_within;
use crate::support::mesh_process::{MESH, MeshProcess, shop_config};

/// `GET path` on the dashboard or an admin port; the body of a 200.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    // The dashboard answers with a length, the sidecars may chunk: undo chunking.
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        return out;
    }
    body.to_string()
}

fn json(addr: SocketAddr, path: &str) -> Value {
    serde_json::from_str(&get(addr, path)).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `(requests, ok)` per (inbound?, peer), from one sidecar's /metrics, health
/// checks and reflection left out as the dashboard leaves them out.
fn counters(admin: SocketAddr) -> HashMap<(bool, String), (f64, f64)> {
    let mut found = HashMap::new();
    for line in get(admin, "/metrics").lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let requests = series.starts_with("meshwork_requests_total{");
        let ok = series.starts_with("meshwork_responses_total{") && series.contains("grpc_status=\"0\"");
        if !(requests || ok) || series.contains("grpc.health.") || series.contains("grpc.reflection.") {
            continue;
        }
        let label = |name: &str| {
            let start = series.find(&format!("{name}=\""))? + name.len() + 2;
            Some(series[start..].split('"').next()?.to_string())
        };
        let key = (
            label("direction").as_deref() == Some("inbound"),
            label("peer").unwrap_or_default(),
        );
        let value: f64 = value.parse().expect("a number");
        let entry = found.entry(key).or_insert((0.0, 0.0));
        if requests {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    found
}

/// Polls `check` every 200 ms until it holds; panics with `what` after `within`.
fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_dashboard_shows_the_demo_as_the_sidecars_counted_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = 32100;
    let config = shop_config(dir.path(), base);
    let config_arg = config.to_str().expect("utf-8 path");
    let mut mesh = MeshProcess::start(&["up", "--demo", "--config", config_arg, "--dashboard", "127.0.0.1:0"]);
    let line = mesh.wait_for("mesh: dashboard at http://", Duration::from_secs(120));
    let dashboard: SocketAddr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let link = mesh.wait_for("mesh: the checkout's trace: http://", Duration::from_secs(60));
    let linked = link.rsplit("#traces/").next().unwrap_or("").trim().to_string();

    // Every figure is the sidecars' own count of the demo's calls.
    let admin = |offset: u16| -> SocketAddr { format!("127.0.0.1:{}", base + offset).parse().expect("addr") };
    // users, catalog, cart, payments at +301..+304 (admin), demo at +300,
    // the gateway's sidecar (the demo's walk over HTTP) at +291.
    let sidecars = [
        ("gateway", 291),
        ("demo", 300),
        ("users", 301),
        ("catalog", 302),
        ("cart", 303),
        ("payments", 304),
    ];
    let mut expected_edges = HashMap::new();
    let mut expected_services = HashMap::new();
    for (service, offset) in sidecars {
        for ((inbound, peer), (requests, ok)) in counters(admin(offset)) {
            if inbound {
                let sum = expected_services.entry(service.to_string()).or_insert((0.0, 0.0));
                sum.0 += requests;
                sum.1 += ok;
            } else {
                expected_edges.insert((service.to_string(), peer), (requests, ok));
            }
        }
    }
    assert!(
        expected_edges.contains_key(&("cart".into(), "payments".into())),
        "{expected_edges:?}"
    );
    let stat = eventually(
        Duration::from_secs(15),
        "the dashboard's figures to match the counters",
        || {
            let stat = json(dashboard, "/api/stat");
            let edges: HashMap<(String, String), (f64, f64)> = stat["edges"]
                .as_array()?
                .iter()
                .filter(|e| e["requests"].as_f64() > Some(0.0))
                .map(|e| {
                    let key = (
                        e["from"].as_str().unwrap_or("").into(),
                        e["to"].as_str().unwrap_or("").into(),
                    );
                    (
                        key,
                        (e["requests"].as_f64().unwrap_or(-1.0), e["ok"].as_f64().unwrap_or(-1.0)),
                    )
                })
                .collect();
            let services: HashMap<String, (f64, f64)> = stat["services"]
                .as_array()?
                .iter()
                .map(|s| {
                    let key = s["name"].as_str().unwrap_or("").to_string();
                    (
                        key,
                        (s["requests"].as_f64().unwrap_or(-1.0), s["ok"].as_f64().unwrap_or(-1.0)),
                    )
                })
                .collect();
            let want_edges: HashMap<_, _> = expected_edges
                .iter()
                .filter(|(_, v)| v.0 > 0.0)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            (edges == want_edges && services == expected_services).then_some(stat)
        },
    );
    // The demo's refused Charge is the one failure of demo → payments.
    let demo_payments = stat["edges"]
        .as_array()
        .and_then(|edges| edges.iter().find(|e| e["from"] == "demo" && e["to"] == "payments"))
        .expect("edge demo → payments")
        .clone();
    let (requests, ok) = (demo_payments["requests"].as_f64(), demo_payments["ok"].as_f64());
    assert_eq!(requests.zip(ok).map(|(r, o)| r - o), Some(1.0), "{demo_payments}");
    assert!(
        demo_payments["p99"].as_f64().is_some_and(|p| p > 0.0),
        "{demo_payments}"
    );

    // The checkout's trace reached the launcher: every hop's sidecars and apps, parents right.
    let checkout = eventually(
        Duration::from_secs(15),
        "the checkout's trace with all its spans",
        || {
            let list = json(dashboard, "/api/traces");
            let t = list["traces"].as_array()?.iter().find(|t| {
                t["root"].as_str().is_some_and(|r| r.ends_with("CartService/Checkout"))
                    && t["spans"].as_u64() >= Some(12)
            })?;
            Some(t["trace_id"].as_str()?.to_string())
        },
    );
    assert_eq!(
        checkout, linked,
        "the trace `mesh up --demo` links to is the checkout's"
    );
    let trace = json(dashboard, &format!("/api/traces/{checkout}"));
    let spans = trace["spans"].as_array().expect("spans");
    let by_id: HashMap<&str, &Value> = spans.iter().map(|s| (s["span_id"].as_str().unwrap_or(""), s)).collect();
    let mut edges: Vec<String> = spans
        .iter()
        .map(|s| {
            let parent = by_id
                .get(s["parent_span_id"].as_str().unwrap_or(""))
                .map_or("-".to_string(), |p| {
                    format!(
                        "{} {}",
                        p["service"].as_str().unwrap_or("?"),
                        p["kind"].as_str().unwrap_or("?")
                    )
                });
            format!(
                "{} {} {} <- {parent}",
                s["service"].as_str().unwrap_or("?"),
                s["kind"].as_str().unwrap_or("?"),
                s["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    edges.sort();
    let mut want = vec![
        "demo-proxy client shop.cart.v1.CartService/Checkout <- -".to_string(),
        "cart-proxy server shop.cart.v1.CartService/Checkout <- demo-proxy client".into(),
        "cart server shop.cart.v1.CartService/Checkout <- cart-proxy server".into(),
    ];
    // The checkout saga: check the user, reserve the units, charge, confirm.
    for (peer, method) in [
        ("users", "shop.users.v1.UserService/GetUser"),
        ("catalog", "shop.catalog.v1.CatalogService/ReserveStock"),
        ("payments", "shop.payments.v1.PaymentService/Charge"),
        ("catalog", "shop.catalog.v1.CatalogService/ConfirmReservation"),
    ] {
        want.push(format!("cart-proxy client {method} <- cart server"));
        want.push(format!("{peer}-proxy server {method} <- cart-proxy client"));
        want.push(format!("{peer} server {method} <- {peer}-proxy server"));
    }
    want.sort();
    assert_eq!(edges, want);

    // The Grafana dashboard asks only for series the sidecars really export.
    let mut exported = std::collections::HashSet::new();
    for offset in [300, 303] {
        for line in get(admin(offset), "/metrics").lines().filter(|l| !l.starts_with('#')) {
            exported.insert(line.split(['{', ' ']).next().unwrap_or("").to_string());
        }
    }
    let grafana =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/meshwork.json"))
            .expect("deploy/grafana/meshwork.json");
    let asked: Vec<&str> = grafana
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("meshwork_"))
        .collect();
    assert!(asked.len() >= 10, "{asked:?}");
    for name in asked {
        assert!(
            exported.contains(name),
            "the Grafana dashboard asks for {name}, which no sidecar exports"
        );
    }

    // The terminal views read the same API.
    let dashboard_arg = dashboard.to_string();
    let stat_out = Command::new(MESH)
        .args(["stat", "--dashboard", &dashboard_arg])
        .output()
        .expect("mesh stat");
    let stat_text = String::from_utf8_lossy(&stat_out.stdout);
    assert!(
        stat_out.status.success() && stat_text.contains("cart -> payments"),
        "{stat_text}"
    );
    let trace_out = Command::new(MESH)
        .args(["trace", &checkout, "--dashboard", &dashboard_arg])
        .output()
        .expect("mesh trace");
    let trace_text = String::from_utf8_lossy(&trace_out.stdout);
    assert!(
        trace_out.status.success()
            && trace_text.contains("\n          payments shop.payments.v1.PaymentService/Charge"),
        "{trace_text}"
    );

    // A real browser: every workload ready, the checkout drawn, an edge red after a fault.
    let venv = std::env::var("MESHWORK_VENV").expect("MESHWORK_VENV (scripts/test sets it)");
    let screenshot = std::env::var("MESH_DASHBOARD_SCREENSHOT")
        .unwrap_or_else(|_| dir.path().join("dashboard.png").display().to_string());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/dashboard_browser.py");
    let browser = output_within(
        Command::new(Path::new(&venv).join("bin/python")).arg(&script).args([
            &format!("http://{dashboard}/"),
            &checkout,
            config_arg,
            MESH,
            &screenshot,
        ]),
        Duration::from_secs(300),
    );
    assert!(
        browser.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr)
    );
    assert!(Path::new(&screenshot).is_file());

    mesh.signal(nix::sys::signal::Signal::SIGTERM);
    let status = mesh.wait(Duration::from_secs(40));
    assert!(status.success(), "mesh up ended with {status}");
}
