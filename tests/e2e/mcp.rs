//! Agents as clients: the shop under `mesh up`, used through the gateway's
//! MCP endpoint by the official MCP Python SDK (tests/e2e/mcp_client.py), in
//! both protocol modes: 2025-11-25 (initialize, session) and 2026-07-28
//! (stateless). Tools are listed per caller, schemas are valid 2020-12,
//! calls browse the catalog, fill a cart and check out (a repeated checkout
//! makes one order), errors are `isError`, a stream reports progress, and
//! the endpoint answers 401/403 with its metadata pointer.

use std::{path::Path, process::Command, time::Duration};

use crate::support::mesh_process::{MeshProcess, shop_config};

// 32100 (the range first planned) is taken by another suite on this machine.
const BASE: u16 = 25100;

#[test]
fn agents_browse_and_buy_through_mcp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), BASE);
    let mut text = std::fs::read_to_string(&config).expect("read mesh.toml");
    // Streams answer after 2 s (WatchProducts never ends by itself).
    text.push_str("\n[gateway.mcp]\nstream_window = \"2s\"\n");
    std::fs::write(&config, text).expect("write mesh.toml");
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(120));

    let venv = std::env::var("MESHWORK_VENV").expect("MESHWORK_VENV (scripts/test sets it)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/mcp_client.py");
    let gateway = format!("http://127.0.0.1:{}", BASE + 80);
    for (mode, protocol) in [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")] {
        let run = Command::new(Path::new(&venv).join("bin/python"))
            .arg(&script)
            .args([&gateway, mode])
            .output()
            .expect("run the MCP client");
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
    }

    mesh.signal(nix::sys::signal::Signal::SIGTERM);
    let status = mesh.wait(Duration::from_secs(40));
    assert!(status.success(), "mesh up ended with {status}");
}
