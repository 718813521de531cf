//! The real `mesh` binary as a child process: a mesh.toml for the shop on a
//! test's own port range, and a process whose output lines can be waited for.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

pub const MESH: &str = env!("CARGO_BIN_EXE_mesh");
pub const MESH_PROXY: &str = env!("CARGO_BIN_EXE_mesh-proxy");

/// A mesh.toml for the four shop services and the demo client, on ports from
/// `base` up (to base + 305), keeping its state in `dir`. Keep `base` and its range below
/// 32768, where Linux's ephemeral ports begin: an outgoing connection of any
/// other test may take a port up there, and `mesh up` then finds it not free.
pub fn shop_config(dir: &Path, base: u16) -> PathBuf {
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
    // The gateway's public port (8080 in the example) moves to base + 80.
    moved = moved.replace("127.0.0.1:8080\"", &format!("127.0.0.1:{}\"", base + 80));
    assert_ne!(moved, text);
    let path = dir.join("mesh.toml");
    std::fs::write(&path, moved).expect("write mesh.toml");
    path
}

/// A running `mesh` process whose output lines arrive on a channel.
pub struct MeshProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl MeshProcess {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like [`start`](Self::start), with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_program(MESH, args, env)
    }

    /// `program args…` (`mesh` or the lean sidecar binary `mesh-proxy`).
    pub fn start_program(program: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
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
    pub fn wait_for(&mut self, needle: &str, within: Duration) -> String {
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

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal mesh");
    }

    /// Waits for the process to end, keeping its remaining output.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
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

    pub fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for MeshProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGTERM);
            let _ = self.wait(Duration::from_secs(20));
        }
        // A failed test shows what the mesh said, the processes' logs included.
        if std::thread::panicking() {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            eprintln!("--- output of mesh ---\n{}", self.output());
        }
    }
}

/// The pids in the app and proxy columns of the table row that starts with `label`.
pub fn pids(output: &str, label: &str) -> (i32, i32) {
    let row = output
        .lines()
        // A table row, not a log line prefixed `label |`.
        .find(|l| {
            let mut fields = l.split_whitespace();
            fields.next() == Some(label) && fields.next() != Some("|")
        })
        .unwrap_or_else(|| panic!("no table row for {label}:\n{output}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    (
        fields[5].parse().expect("app pid"),
        fields[6].parse().expect("proxy pid"),
    )
}
