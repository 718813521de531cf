//! Traces through the whole shop, as real processes: `mesh up --demo` with
//! every sidecar and service exporting spans over OTLP to a test collector,
//! and one checkout arriving as ONE trace whose parent links run
//! demo sidecar → cart sidecar → cart → cart sidecar → peer sidecar → peer,
//! for users, catalog and payments; the sidecars' JSON access log names the
//! same trace. A shop stopped right after a checkout, its sidecars on one
//! thread as `mesh up` runs them, delivers every span of it before it exits.
//! And a shop whose collector is missing still checks out, and counts the
//! spans it could not export.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use nix::sys::signal::Signal;

use crate::support::{
    http,
    mesh_process::{MeshProcess, shop_config},
    otlp::{CLIENT, Collector, ReceivedSpan, SERVER},
};

const CHECKOUT: &str = "shop.cart.v1.CartService/Checkout";
/// What cart calls while checking out, by service.
const CHECKOUT_CALLS: [(&str, &str); 3] = [
    ("users", "shop.users.v1.UserService/GetUser"),
    ("catalog", "shop.catalog.v1.CatalogService/ReserveStock"),
    ("payments", "shop.payments.v1.PaymentService/Charge"),
];

/// Spans go out every 100 ms instead of every 5 s.
const QUICK_EXPORT: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

/// One trace's spans, by span id.
struct Trace(HashMap<String, ReceivedSpan>);

impl Trace {
    fn of(spans: &[ReceivedSpan], trace_id: &str) -> Trace {
        Trace(
            spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| (s.span_id.clone(), s.clone()))
                .collect(),
        )
    }

    /// The one span of `service` with this kind and name.
    fn find(&self, service: &str, kind: i32, name: &str) -> Result<&ReceivedSpan, String> {
        let found: Vec<_> = self
            .0
            .values()
            .filter(|s| s.service == service && s.kind == kind && s.name == name)
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(format!("no {service} span {name} (kind {kind}) in the trace yet")),
            many => Err(format!("{} {service} spans {name} (kind {kind})", many.len())),
        }
    }

    fn parent_of(&self, span: &ReceivedSpan) -> Result<&ReceivedSpan, String> {
        self.0
            .get(&span.parent_span_id)
            .ok_or_else(|| format!("parent of {} {} not (yet) in the trace", span.service, span.name))
    }

    /// `child`'s parent is `parent`.
    fn expect_parent(&self, child: &ReceivedSpan, parent: &ReceivedSpan) -> Result<(), String> {
        let found = self.parent_of(child)?;
        if found.span_id == parent.span_id {
            Ok(())
        } else {
            Err(format!(
                "{} {} has parent {} {}, expected {} {}",
                child.service, child.name, found.service, found.name, parent.service, parent.name
            ))
        }
    }
}

/// Checks the checkout trace is complete and correctly linked; returns it.
fn checkout_trace(spans: &[ReceivedSpan]) -> Result<Trace, String> {
    let root = spans
        .iter()
        .find(|s| s.service == "demo-proxy" && s.kind == CLIENT && s.name == CHECKOUT)
        .ok_or("no checkout span from the demo's sidecar yet")?;
    let trace = Trace::of(spans, &root.trace_id);
    // The demo client itself is not traced: its sidecar's span is the root.
    if !root.parent_span_id.is_empty() {
        return Err(format!(
            "the demo sidecar's checkout span has a parent {}",
            root.parent_span_id
        ));
    }
    let cart_in = trace.find("cart-proxy", SERVER, CHECKOUT)?;
    trace.expect_parent(cart_in, root)?;
    let cart = trace.find("cart", SERVER, CHECKOUT)?;
    trace.expect_parent(cart, cart_in)?;
    for (service, method) in CHECKOUT_CALLS {
        let out = trace.find("cart-proxy", CLIENT, method)?;
        trace.expect_parent(out, cart)?;
        let inbound = trace.find(&format!("{service}-proxy"), SERVER, method)?;
        trace.expect_parent(inbound, out)?;
        let app = trace.find(service, SERVER, method)?;
        trace.expect_parent(app, inbound)?;
    }
    // Every span of the trace hangs off another one of it: no gaps.
    for span in trace.0.values().filter(|s| s.span_id != root.span_id) {
        trace.parent_of(span)?;
    }
    Ok(trace)
}

#[test]
fn one_checkout_is_one_connected_trace() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), 31100);
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, format!("{text}\n[telemetry]\naccess_log = true\n")).expect("write config");
    let endpoint = collector.endpoint();
    let mut mesh = MeshProcess::start_with_env(
        &["up", "--demo", "--config", config.to_str().expect("utf-8 path")],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), QUICK_EXPORT],
    );
    mesh.wait_for("demo: done", Duration::from_secs(120));

    let trace = collector.wait_until(Duration::from_secs(20), checkout_trace);
    let services: std::collections::BTreeSet<&str> = trace.0.values().map(|s| s.service.as_str()).collect();
    for service in [
        "demo-proxy",
        "cart-proxy",
        "cart",
        "users-proxy",
        "users",
        "catalog-proxy",
        "catalog",
        "payments-proxy",
        "payments",
    ] {
        assert!(services.contains(service), "{service} missing from {services:?}");
    }

    // The sidecars' spans follow the RPC conventions.
    let cart_in = trace.find("cart-proxy", SERVER, CHECKOUT).expect("cart inbound span");
    let attr = |span: &ReceivedSpan, key: &str| span.attributes.get(key).cloned().unwrap_or_default();
    assert_eq!(attr(cart_in, "rpc.system"), "grpc");
    assert_eq!(attr(cart_in, "rpc.service"), "shop.cart.v1.CartService");
    assert_eq!(attr(cart_in, "rpc.method"), "Checkout");
    assert_eq!(attr(cart_in, "rpc.grpc.status_code"), "0");
    assert_eq!(
        attr(cart_in, "meshwork.peer.identity"),
        "spiffe://meshwork.local/service/demo"
    );
    let charge = trace
        .find("cart-proxy", CLIENT, "shop.payments.v1.PaymentService/Charge")
        .expect("charge client span");
    assert_eq!(attr(charge, "meshwork.peer.identity"), "payments");
    assert_eq!(attr(charge, "server.address"), "payments");
    assert_eq!(attr(charge, "meshwork.retries"), "0");
    // The services' spans carry the status too.
    let cart = trace.find("cart", SERVER, CHECKOUT).expect("cart span");
    assert_eq!(attr(cart, "rpc.grpc.status_code"), "0");
    eprintln!(
        "checkout trace {}: {} spans from {} processes",
        cart.trace_id,
        trace.0.len(),
        services.len()
    );

    // The cart sidecar's access-log line for the checkout, with its trace id.
    let line = loop {
        let found = mesh.output().lines().find_map(|line| {
            let (label, json) = line.split_once(" | ")?;
            (label.trim() == "cart-proxy" && json.contains(CHECKOUT)).then(|| json.to_string())
        });
        match found {
            Some(line) => break line,
            None => {
                mesh.wait_for(CHECKOUT, Duration::from_secs(10));
            }
        }
    };
    let logged: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(logged["trace_id"], cart.trace_id.as_str(), "{line}");
    assert_eq!(logged["span_id"], cart_in.span_id.as_str(), "{line}");
    assert_eq!(logged["direction"], "inbound", "{line}");
    assert_eq!(logged["peer"], "demo", "{line}");
    assert_eq!(logged["grpc_status"], 0, "{line}");
    assert!(logged["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    assert!(logged["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
}

#[test]
fn a_shop_stopped_at_once_delivers_every_span_of_its_checkout() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), 30600);
    let endpoint = collector.endpoint();
    // The default schedule (a batch every 5 s) and one-thread sidecars, as
    // `mesh up` runs them: the checkout's spans are all still queued when
    // the stop comes.
    let mut mesh = MeshProcess::start_with_env(
        &["up", "--demo", "--config", config.to_str().expect("utf-8 path")],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("MESHWORK_PROXY_THREADS", "1"),
        ],
    );
    mesh.wait_for("demo: done", Duration::from_secs(120));
    let stopping = std::time::Instant::now();
    mesh.signal(Signal::SIGTERM);
    let status = mesh.wait(Duration::from_secs(30));
    let took = stopping.elapsed();
    assert!(status.success(), "mesh exited with {status}:\n{}", mesh.output());
    // Every process flushed before it exited: nothing is left to arrive.
    let trace = collector.wait_until(Duration::from_millis(200), checkout_trace);
    assert!(
        !mesh.output().contains("spans were dropped"),
        "spans were dropped:\n{}",
        mesh.output()
    );
    eprintln!(
        "stopped {took:?} after the checkout; all {} spans of its trace arrived",
        trace.0.len()
    );
}

/// `/metrics` of the admin at `addr`, polled until `ready` accepts it.
async fn scrape_until(addr: SocketAddr, within: Duration, ready: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let body = http::get(addr, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        if ready(&body) || tokio::time::Instant::now() >= deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `series` (name and labels, as printed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn a_missing_collector_fails_no_call_and_counts_lost_spans() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), 31600);
    let endpoint = format!("http://{closed}");
    let mut mesh = MeshProcess::start_with_env(
        &["up", "--demo", "--config", config.to_str().expect("utf-8 path")],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), QUICK_EXPORT],
    );
    // Every step of the demo, checkout included, succeeds.
    mesh.wait_for("demo: 6. checked out: order", Duration::from_secs(120));
    mesh.wait_for("demo: done", Duration::from_secs(30));

    // The demo's sidecar (admin on base + 300) counts the spans it lost.
    let demo_admin: SocketAddr = "127.0.0.1:31900".parse().expect("addr");
    let series = "meshwork_spans_dropped_total{reason=\"export_failed\"}";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let text = runtime.block_on(scrape_until(demo_admin, Duration::from_secs(10), |text| {
        sample(text, series).is_some_and(|n| n > 0.0)
    }));
    let lost = sample(&text, series).unwrap_or(0.0);
    assert!(lost > 0.0, "no lost spans counted:\n{text}");
    // Every demo call was answered (none left the sidecar as UNAVAILABLE
    // because of tracing): the responses carry the apps' statuses.
    assert!(
        !text.contains("grpc_status=\"14\""),
        "calls failed as UNAVAILABLE:\n{text}"
    );
}
