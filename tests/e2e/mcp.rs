//! Agents as clients: the shop under `mesh up`, used through the gateway's
//! MCP endpoint by the official MCP Python SDK (tests/e2e/mcp_client.py), in
//! both protocol modes: 2025-11-25 (initialize, session) and 2026-07-28
//! (stateless). Tools are listed per caller, schemas are valid 2020-12,
//! calls browse the catalog, fill a cart and check out (a repeated checkout
//! makes one order), errors are `isError`, a stream reports progress, and
//! the endpoint answers 401/403 with its metadata pointer; and an agent signs
//! its user in by itself through the gateway's OAuth 2.1 authorization server
//! (discovery, dynamic registration, login page, PKCE), its token bound to
//! the MCP resource.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::support::child::output_within;
use crate::support::mesh_process::{MESH, MeshProcess, shop_config};
use crate::support::postgres::Backend;

// 32100 (the range first planned) is taken by another suite on this machine.
const BASE: u16 = 19100;

#[test]
fn agents_browse_and_buy_through_mcp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), BASE);
    let mut text = std::fs::read_to_string(&config).expect("read mesh.toml");
    // Streams answer after 2 messages (WatchProducts never ends by itself);
    // one that waits for more is only ended by its client cancelling.
    text.push_str("\n[gateway.mcp]\nstream_window = \"60s\"\nstream_messages = 2\n");
    // Tokens live 20 s, with no leeway, so that one expires within the test.
    let text = text.replacen("[gateway.auth]\n", "[gateway.auth]\nleeway = \"0s\"\n", 1);
    // A tool list naming no method is refused at start, with the key.
    let bad = dir.path().join("bad.toml");
    let typo = text.replacen(
        "[gateway.mcp]\n",
        "[gateway.mcp]\ntools = [\"CartService/Chekout\"]\n",
        1,
    );
    std::fs::write(&bad, typo).expect("write bad.toml");
    let refused = Command::new(MESH)
        .args(["gateway", "--config", bad.to_str().expect("utf-8")])
        .output()
        .expect("mesh gateway");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("bad.toml: gateway.mcp.tools: 'CartService/Chekout' names no method"),
        "{stderr}"
    );
    std::fs::write(&config, text).expect("write mesh.toml");
    let mut mesh = MeshProcess::start_with_env(
        &["up", "--config", config.to_str().expect("utf-8")],
        &[("MESH_USERS_TOKEN_TTL", "20s")],
    );
    mesh.wait_for("mesh: up", Duration::from_secs(120));

    let venv = std::env::var("MESHWORK_VENV").expect("MESHWORK_VENV (scripts/test sets it)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/mcp_client.py");
    let gateway = format!("http://127.0.0.1:{}", BASE + 80);
    let mut early_token = String::new();
    let catalog_admin = SocketAddr::from(([127, 0, 0, 1], BASE + 302));
    for (round, (mode, protocol)) in [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")]
        .into_iter()
        .enumerate()
    {
        let run = output_within(
            Command::new(Path::new(&venv).join("bin/python"))
                .arg(&script)
                .args([&gateway, mode]),
            Duration::from_secs(180),
        );
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "the MCP client ({mode}) failed:\n{stdout}\n{}\n--- mesh ---\n{}",
            String::from_utf8_lossy(&run.stderr),
            mesh.output()
        );
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the client's JSON summary");
        eprintln!("{mode}: {summary:#}");
        assert_eq!(summary["protocol"], protocol);
        assert_eq!(summary["orders"], 1, "one order for a repeated checkout");
        assert_eq!(summary["price_after_preferences"]["currencyCode"], "EUR", "{summary}");
        assert_eq!(
            summary["order_total"]["currencyCode"], "EUR",
            "charged in the preferred currency"
        );
        assert!(
            summary["not_found"]
                .as_str()
                .is_some_and(|t| t.starts_with("NOT_FOUND"))
        );
        assert!(summary["stream_progress"].as_u64().is_some_and(|n| n >= 2));
        assert!(summary["missing_token"].as_str().is_some_and(|c| c.contains(&format!(
            "resource_metadata=\"{gateway}/.well-known/oauth-protected-resource/mcp\""
        ))));
        assert_eq!(summary["metadata"]["resource"], format!("{gateway}/mcp"));
        assert!(
            summary["price_schema"]["properties"]["amountMinor"]["type"] == "string",
            "int64 as a string"
        );
        let anonymous = summary["anonymous_tools"].as_array().expect("names");
        assert!(anonymous.iter().all(|n| !n.as_str().unwrap_or("").starts_with("cart_")));
        // Each run ends two watches early at the catalog: the one the gateway
        // ended after 2 messages, and the one the agent cancelled, which
        // would otherwise stay open for the 60 s window.
        let wanted = 2.0 * (round + 1) as f64;
        let until = Instant::now() + Duration::from_secs(10);
        while cancelled_watches(catalog_admin) < wanted && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            cancelled_watches(catalog_admin),
            wanted,
            "watches cancelled in the catalog ({mode})"
        );
        if early_token.is_empty() {
            early_token = summary["early_token"].as_str().expect("a token").to_string();
        }
    }

    // `mesh mcp --stdio`, launched by the SDK, calling through the demo's sidecar.
    let run = output_within(
        Command::new(Path::new(&venv).join("bin/python")).arg(&script).args([
            gateway.as_str(),
            "stdio",
            MESH,
            config.to_str().expect("utf-8"),
        ]),
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the MCP client (stdio) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("summary");
    assert_eq!(summary["stdio_cart_user"], true, "{summary}");

    // An agent that signs its user in by itself, through the gateway's
    // OAuth 2.1 authorization server; its token is bound to the MCP resource.
    let run = output_within(
        Command::new(Path::new(&venv).join("bin/python"))
            .arg(&script)
            .args([gateway.as_str(), "oauth"]),
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the MCP client (oauth) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("summary");
    eprintln!("oauth: {summary:#}");
    assert_eq!(summary["oauth_audience"], format!("{gateway}/mcp"), "{summary}");
    assert_eq!(summary["oauth_user"], true);
    assert_eq!(summary["oauth_token_at_rest"], 401, "an MCP token is not for REST");
    assert_eq!(
        summary["oauth_other_resource"],
        serde_json::json!([400, "invalid_target"])
    );
    assert_eq!(summary["oauth_replay"], serde_json::json!([400, "invalid_grant"]));
    assert_eq!(
        summary["oauth_scope"], "shop:read shop:write",
        "both scopes when none is asked for"
    );
    let read_only = &summary["read_only"];
    assert_eq!(
        (&read_only["read"], &read_only["write"]),
        (&200.into(), &403.into()),
        "{read_only}"
    );
    let challenge = read_only["challenge"].as_str().unwrap_or("");
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"shop:write\""),
        "{challenge}"
    );

    // The first run's first token expires (20 s): then it gets 401 with the
    // metadata pointer. Until then the same request is let in (200).
    let gateway_addr = std::net::SocketAddr::from(([127, 0, 0, 1], BASE + 80));
    let deadline = Instant::now() + Duration::from_secs(40);
    let (status, challenge) = loop {
        let (status, challenge) = list_tools(gateway_addr, &early_token);
        if status != 200 || Instant::now() > deadline {
            break (status, challenge);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status, 401, "{challenge}");
    assert!(
        challenge.contains("resource_metadata=") && challenge.contains("the token has expired"),
        "{challenge}"
    );

    mesh.signal(nix::sys::signal::Signal::SIGTERM);
    let status = mesh.wait(Duration::from_secs(40));
    assert!(status.success(), "mesh up ended with {status}");

    // The payments database: one charge per agent that checked out (the two
    // HTTP runs), however many times each pressed the tool.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (orders, keys) = runtime.block_on(async {
        let books = Backend::Sqlite.books(&dir.path().join(".mesh"), "payments").await;
        (
            books.count("SELECT COUNT(*) FROM orders").await,
            books.count("SELECT COUNT(DISTINCT idempotency_key) FROM orders").await,
        )
    });
    assert_eq!((orders, keys), (2, 2), "one order per agent's checkout");
}

/// A stateless `tools/list` with `token`: the HTTP status and the
/// `WWW-Authenticate` header.
fn list_tools(gateway: SocketAddr, token: &str) -> (u16, String) {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: shop\r\nconnection: close\r\naccept: application/json, text/event-stream\r\n\
         content-type: application/json\r\nmcp-protocol-version: 2026-07-28\r\nmcp-method: tools/list\r\n\
         authorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(gateway).expect("connect to the gateway");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let challenge = text
        .lines()
        .find_map(|l| l.strip_prefix("www-authenticate: "))
        .unwrap_or(&text)
        .to_string();
    (status, challenge)
}

/// WatchProducts calls the catalog's sidecar saw end as CANCELLED.
fn cancelled_watches(admin: SocketAddr) -> f64 {
    let mut stream = TcpStream::connect(admin).expect("connect to the catalog's sidecar admin");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .expect("write");
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    raw.lines()
        .filter(|l| {
            l.starts_with("meshwork_responses_total{")
                && l.contains("direction=\"inbound\"")
                && l.contains("WatchProducts")
                && l.contains("grpc_status=\"1\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
