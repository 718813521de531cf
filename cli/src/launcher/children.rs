//! The launcher's child processes: started with their output prefixed by
//! their name, watched for exit, and stopped in order with a grace period.

use std::{collections::HashMap, path::PathBuf, process::ExitStatus, time::Duration};

use anyhow::{Context, Result};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
    sync::mpsc,
    time::timeout,
};

/// How to start one process of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Its name in logs and the table: `cart`, `cart-1`, `cart-proxy`.
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Set on top of the launcher's own environment.
    pub env: Vec<(String, String)>,
    /// Where it starts; the launcher's own folder when `None`.
    pub workdir: Option<PathBuf>,
}

/// A child that ended, by name.
pub struct Exit {
    pub name: String,
    pub status: std::io::Result<ExitStatus>,
}

impl Exit {
    /// "exited with status 1", "was killed by SIGKILL", …
    pub fn describe(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        match &self.status {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => match Signal::try_from(signal) {
                    Ok(signal) => format!("was killed by {signal}"),
                    Err(_) => format!("was killed by signal {signal}"),
                },
                (None, None) => format!("ended ({status})"),
            },
            Err(e) => format!("could not be waited for: {e}"),
        }
    }
}

/// Every process the launcher started and has not seen end.
pub struct Supervisor {
    running: HashMap<String, u32>,
    exits_tx: mpsc::Sender<Exit>,
    exits_rx: mpsc::Receiver<Exit>,
    /// Width of the name column in prefixed log lines.
    label_width: usize,
    /// Told of every spawn and exit, for the dashboard's workloads table.
    board: Option<crate::dashboard::Board>,
}

impl Supervisor {
    pub fn new(label_width: usize) -> Self {
        // One slot per possible child is plenty: each sends exactly once.
        let (exits_tx, exits_rx) = mpsc::channel(64);
        Supervisor {
            running: HashMap::new(),
            exits_tx,
            exits_rx,
            label_width,
            board: None,
        }
    }

    /// Tells `board` of every process started and ended from now on.
    pub fn report_to(&mut self, board: crate::dashboard::Board) {
        self.board = Some(board);
    }

    /// Starts `spec`; returns its pid.
    pub fn spawn(&mut self, spec: &ProcessSpec) -> Result<u32> {
        let ProcessSpec {
            label: name,
            program,
            args,
            env,
            workdir,
        } = spec;
        let mut command = Command::new(program);
        if let Some(dir) = workdir {
            command.current_dir(dir);
        }
        let mut child = command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches only the
            // launcher, which then stops the children in a deliberate order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child.id().with_context(|| format!("{name} exited at once"))?;

        let label = format!("{name:>width$} |", width = self.label_width);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, label.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, label));
        }
        let exits = self.exits_tx.clone();
        let owned_name = name.to_string();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = exits
                .send(Exit {
                    name: owned_name,
                    status,
                })
                .await;
        });
        self.running.insert(name.to_string(), pid);
        if let Some(board) = &self.board {
            board.started(name, pid);
        }
        Ok(pid)
    }

    /// The next child to end. Pending forever when none is running.
    pub async fn next_exit(&mut self) -> Exit {
        loop {
            if self.running.is_empty() {
                std::future::pending::<()>().await;
            }
            if let Some(exit) = self.exits_rx.recv().await
                && self.running.remove(&exit.name).is_some()
            {
                if let Some(board) = &self.board {
                    board.exited(&exit.name);
                }
                return exit;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Stops `names` (those still running): SIGTERM, then SIGKILL for any
    /// still there after `grace`. Reports each exit that is not a clean one.
    pub async fn stop(&mut self, names: &[String], grace: Duration) {
        let targets: Vec<String> = names
            .iter()
            .filter(|n| self.running.contains_key(*n))
            .cloned()
            .collect();
        for name in &targets {
            self.signal(name, Signal::SIGTERM);
        }
        let all_ended = timeout(grace, async {
            while targets.iter().any(|n| self.running.contains_key(n)) {
                let exit = self.next_exit().await;
                report_unclean(&exit);
            }
        })
        .await;
        if all_ended.is_err() {
            for name in targets.iter().filter(|n| self.running.contains_key(*n)) {
                eprintln!("mesh: {name} did not stop within {grace:?}; killing it");
                self.signal(name, Signal::SIGKILL);
            }
            while targets.iter().any(|n| self.running.contains_key(n)) {
                self.next_exit().await;
            }
        }
    }

    fn signal(&self, name: &str, signal: Signal) {
        if let Some(&pid) = self.running.get(name)
            && let Ok(pid) = i32::try_from(pid)
        {
            // ESRCH only means it ended in the meantime; its exit is on its way.
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

fn report_unclean(exit: &Exit) {
    if !matches!(&exit.status, Ok(s) if s.success()) {
        eprintln!("mesh: {} {}", exit.name, exit.describe());
    }
}

/// Copies a child's output to ours, a line at a time, behind its label.
async fn forward_lines(stream: impl AsyncRead + Unpin, label: String) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        crate::dashboard::logs::record(&label, &line);
        println!("{label} {line}");
    }
}
