//! The storefront as a shopper sees it: `mesh up` serves it from the
//! gateway's public port, and headless Chromium (WebDriver, driven by
//! storefront_browser.py) makes a whole purchase on it through the REST API:
//! register, log in, filter to books, fill the cart and remove from it,
//! check out, find the order. Every call goes browser → gateway → gateway's
//! sidecar → mTLS → the services. Then `mesh demo` walks the same shop
//! over HTTP and JSON through the gateway, as the README's curl steps do.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::Duration,
};

use crate::support::child::output_within;
use crate::support::mesh_process::{MESH, MeshProcess, shop_config};

/// `GET path` over HTTP/1.1: the head and the body (the storefront's files have a length).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
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
    (head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn a_shopper_buys_two_books_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), 21100);
    let config_arg = config.to_str().expect("utf-8 path");
    let mut mesh = MeshProcess::start(&["up", "--config", config_arg, "--dashboard", "127.0.0.1:0"]);
    let line = mesh.wait_for("mesh: storefront at http://", Duration::from_secs(120));
    let storefront: SocketAddr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert_eq!(storefront.port(), 21180, "the gateway's port from mesh.toml: {line}");
    // Every workload, the gateway among them, answered its readiness check.
    mesh.wait_for("mesh: up", Duration::from_secs(30));

    // The page and its script and style are the repository's files, as they are.
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/storefront");
    for (path, file, content_type) in [
        ("/", "index.html", "text/html"),
        ("/app.js", "app.js", "text/javascript"),
        ("/style.css", "style.css", "text/css"),
    ] {
        let (head, body) = get(storefront, path);
        assert!(head.starts_with("http/1.1 200"), "GET {path}: {head}");
        assert!(
            head.contains(&format!("content-type: {content_type}")),
            "GET {path}: {head}"
        );
        let want = std::fs::read_to_string(files.join(file)).expect("storefront file");
        assert_eq!(body, want, "GET {path} is not gateway/storefront/{file}");
    }

    let venv = std::env::var("MESHWORK_VENV").expect("MESHWORK_VENV (scripts/test sets it)");
    let screenshot = std::env::var("MESH_STOREFRONT_SCREENSHOT")
        .unwrap_or_else(|_| dir.path().join("storefront.png").display().to_string());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/storefront_browser.py");
    let browser = output_within(
        Command::new(Path::new(&venv).join("bin/python"))
            .arg(&script)
            .args([&format!("http://{storefront}/"), &screenshot]),
        Duration::from_secs(300),
    );
    let said = String::from_utf8_lossy(&browser.stdout);
    assert!(
        browser.status.success(),
        "the browser test failed:\n{said}\n{}",
        String::from_utf8_lossy(&browser.stderr)
    );
    assert!(said.contains("storefront: purchase complete"), "{said}");
    eprint!("{said}");
    assert!(Path::new(&screenshot).is_file());

    // The demo's walk through the gateway, against the same mesh.
    let demo = Command::new(MESH)
        .args(["demo", "--config", config_arg])
        .output()
        .expect("mesh demo");
    let walked = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "mesh demo failed:\n{walked}\n{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    for step in [
        "demo: now over HTTP and JSON through the gateway at http://127.0.0.1:21180",
        "demo: http 4. POST /v1/users/me/cart/items with -2 units → 400 Bad Request: quantity must be at least 1",
        "demo: http 6. POST /v1/users/me/cart:checkout → 200: order ",
        "demo: http 7. GET /v1/users/me/orders → 200: lists ",
        "demo: http 8. GET /v1/users/me/orders without a token → 401 Unauthorized",
        "demo: done",
    ] {
        assert!(walked.contains(step), "no {step:?} in:\n{walked}");
    }

    mesh.signal(nix::sys::signal::Signal::SIGTERM);
    let status = mesh.wait(Duration::from_secs(40));
    assert!(status.success(), "mesh up ended with {status}");
}
