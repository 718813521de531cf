//! The `mesh` binary as a user runs it: `mesh up --demo` launches the whole
//! shop as real processes with real mTLS and checks out through it; a dead
//! child, a busy port and a malformed mesh.toml are each reported by name;
//! a stop during start-up stops what has started.

use std::{net::TcpListener, time::Duration};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::support::mesh_process::{MESH, MESH_PROXY, MeshProcess, pids, shop_config};

#[test]
fn mesh_up_checks_out_through_the_sidecars_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), 27100);
    let config_arg = config.to_str().expect("utf-8 path");
    let mut mesh = MeshProcess::start(&["up", "--demo", "--config", config_arg]);

    mesh.wait_for("demo: 6. checked out: order", Duration::from_secs(120));
    mesh.wait_for("demo: 9. the demo may not charge directly", Duration::from_secs(30));
    mesh.wait_for("demo: done", Duration::from_secs(30));
    mesh.wait_for("mesh: up", Duration::from_secs(30));
    let (catalog_pid, _) = pids(&mesh.output(), "catalog");
    let output = mesh.output();
    assert!(
        output.contains("issued certificate for spiffe://meshwork.local/service/payments"),
        "{output}"
    );
    // Children's lines carry their names.
    assert!(output.contains("catalog-proxy |"), "{output}");

    // Private keys are readable by their owner only.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join(".mesh/certs/cart-key.pem");
    let mode = std::fs::metadata(&key).expect("cart key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());

    // A child that dies is reported by name with how it ended.
    kill(Pid::from_raw(catalog_pid), Signal::SIGKILL).expect("kill catalog");
    mesh.wait_for("mesh: catalog was killed by SIGKILL", Duration::from_secs(10));

    mesh.signal(Signal::SIGTERM);
    let status = mesh.wait(Duration::from_secs(40));
    assert!(status.success(), "mesh up ended with {status}:\n{}", mesh.output());
    assert!(mesh.output().contains("mesh: stopped"));
    // Everything it started is gone: its ports are free again.
    for port in [27101, 27201, 27301, 27401, 27300, 27400] {
        TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("port {port} still taken: {e}"));
    }
}

/// Ctrl-C or SIGTERM while the mesh is still starting stops what has
/// started, rather than killing the launcher and orphaning its children.
#[test]
fn mesh_up_stopped_during_start_up_stops_what_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), 30100);
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8 path")]);
    // Sidecars start first; the apps are not ready yet.
    mesh.wait_for("sidecar running", Duration::from_secs(60));
    mesh.signal(Signal::SIGTERM);
    let status = mesh.wait(Duration::from_secs(40));
    let output = mesh.output();
    assert!(status.success(), "mesh up ended with {status}:\n{output}");
    assert!(
        !output.contains("mesh: up;"),
        "stopped too late to test start-up:\n{output}"
    );
    assert!(output.contains("mesh: stopped"), "{output}");
    for port in [30101, 30201, 30301, 30401, 30300, 30400] {
        TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("port {port} still taken: {e}"));
    }
}

#[test]
fn port_in_use_is_reported_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), 27600);
    let _busy = TcpListener::bind("127.0.0.1:27703").expect("bind cart's inbound port");
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8 path")]);
    let status = mesh.wait(Duration::from_secs(30));
    assert!(!status.success());
    let output = mesh.output();
    assert!(
        output.contains("services.cart.inbound: port 127.0.0.1:27703 is not free"),
        "{output}"
    );
}

#[test]
fn malformed_mesh_toml_is_refused_with_file_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), 27900);
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        text.replace("from = \"cart\", methods = [\"Charge\"]", "from = \"kart\""),
    )
    .expect("write");
    let path = config.to_str().expect("utf-8 path");

    for (program, command) in [
        (MESH, &["up", "--config", path][..]),
        (MESH, &["proxy", "--name", "cart", "--config", path]),
        (MESH, &["certs", "--config", path]),
        (MESH_PROXY, &["--name", "cart", "--config", path]),
    ] {
        let mut mesh = MeshProcess::start_program(program, command, &[]);
        let status = mesh.wait(Duration::from_secs(30));
        assert!(!status.success(), "{command:?} accepted a bad config");
        let output = mesh.output();
        assert!(
            output.contains(&format!(
                "{path}: services.payments.allow[0].from: unknown workload 'kart'"
            )),
            "{command:?}: {output}"
        );
    }
    // A sidecar's thread count is checked before anything starts.
    let mut proxy =
        MeshProcess::start_program(MESH_PROXY, &["--name", "cart", "--config", path, "--threads", "0"], &[]);
    assert!(!proxy.wait(Duration::from_secs(30)).success());
    assert!(
        proxy.output().contains("invalid value '0' for '--threads <THREADS>'"),
        "{}",
        proxy.output()
    );
    // Nothing was started or written for a config that was refused.
    assert!(!dir.path().join(".mesh").exists());
}
