//! The `mesh` binary as a user runs it: `mesh up --demo` launches the whole
//! shop as real processes with real mTLS and checks out through it; a dead
//! child, a busy port and a malformed mesh.toml are each reported by name.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const MESH: &str = env!("CARGO_BIN_EXE_mesh");

/// A mesh.toml for the four shop services and the demo client, on ports from
/// `base` up, keeping its state in `dir`.
fn shop_config(dir: &Path, base: u16) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh.toml"))
        .expect("the repository's mesh.toml");
    // The example uses 7100..7404; move every port into this test's range.
    let mut moved = text.clone();
    for port in (7100..7405).rev() {
        moved = moved.replace(
            &format!("127.0.0.1:{port}\""),
            &format!("127.0.0.1:{}\"", port - 7100 + base),
        );
    }
    assert_ne!(moved, text);
    let path = dir.join("mesh.toml");
    std::fs::write(&path, moved).expect("write mesh.toml");
    path
}

/// A running `mesh` process whose output lines arrive on a channel.
struct MeshProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl MeshProcess {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(MESH)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mesh");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        MeshProcess {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; panics with everything seen so far otherwise.
    fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?} within {within:?}; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal mesh");
    }

    /// Waits for the process to end, keeping its remaining output.
    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mesh still running after {within:?}:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for MeshProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGTERM);
            let _ = self.wait(Duration::from_secs(20));
        }
    }
}

/// The pid in the app column of `name`'s row of the table `mesh up` prints.
fn app_pid(table_row: &str) -> i32 {
    table_row
        .split_whitespace()
        .nth(5)
        .and_then(|p| p.parse().ok())
        .expect("pid in table row")
}

#[test]
fn mesh_up_checks_out_through_the_sidecars_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), 27100);
    let config_arg = config.to_str().expect("utf-8 path");
    let mut mesh = MeshProcess::start(&["up", "--demo", "--config", config_arg]);

    let catalog_row = mesh.wait_for("catalog    127.0.0.1:27102", Duration::from_secs(120));
    mesh.wait_for("demo: 6. checked out: order", Duration::from_secs(60));
    mesh.wait_for("demo: 9. the demo may not charge directly", Duration::from_secs(30));
    mesh.wait_for("demo: done", Duration::from_secs(30));
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
    kill(Pid::from_raw(app_pid(&catalog_row)), Signal::SIGKILL).expect("kill catalog");
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

    for command in [
        &["up", "--config", path][..],
        &["proxy", "--name", "cart", "--config", path],
        &["certs", "--config", path],
    ] {
        let mut mesh = MeshProcess::start(command);
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
    // Nothing was started or written for a config that was refused.
    assert!(!dir.path().join(".mesh").exists());
}
