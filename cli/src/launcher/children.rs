//! The launcher's child processes: started with their output prefixed by
//! their name, watched for exit, started again after they end (by their
//! service's restart policy, with exponential backoff, up to a limit), and
//! stopped in order with a grace period.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::ExitStatus,
    time::{Duration, Instant},
};

use meshwork_config::Restart;

use anyhow::{Context, Result};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    io::{AsyncRead, BufReader},
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

/// First wait before a restart; it doubles with each restart in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Restarts in a row (each run shorter than [`STABLE_RUN`]) before giving up.
pub const MAX_RESTARTS: u32 = 8;
/// A run this long counts as healthy: the next failure starts the count anew.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// What the supervisor knows of a process it may have to start again.
struct Known {
    spec: ProcessSpec,
    started: Instant,
    /// Restarts in a row so far.
    restarts: u32,
}

/// What [`Supervisor::next_event`] saw.
pub enum Event {
    Exited(Exit),
    /// This process's backoff is over: [`Supervisor::respawn`] it.
    Due(String),
}

/// Every process the launcher started and has not seen end.
pub struct Supervisor {
    running: HashMap<String, u32>,
    /// Processes started and not deliberately stopped, by label.
    known: HashMap<String, Known>,
    exits_tx: mpsc::Sender<Exit>,
    exits_rx: mpsc::Receiver<Exit>,
    /// Labels whose backoff is over, sent by a timer task.
    due_tx: mpsc::Sender<String>,
    due_rx: mpsc::Receiver<String>,
    /// Width of the name column in prefixed log lines.
    label_width: usize,
    /// Told of every spawn and exit, for the dashboard's workloads table.
    board: Option<crate::dashboard::Board>,
    /// The first wait before a restart ([`FIRST_BACKOFF`]; shorter in tests).
    first_backoff: Duration,
}

impl Supervisor {
    pub fn new(label_width: usize) -> Self {
        // One slot per possible child is plenty: each sends exactly once.
        let (exits_tx, exits_rx) = mpsc::channel(64);
        let (due_tx, due_rx) = mpsc::channel(64);
        Supervisor {
            running: HashMap::new(),
            known: HashMap::new(),
            exits_tx,
            exits_rx,
            due_tx,
            due_rx,
            label_width,
            board: None,
            first_backoff: FIRST_BACKOFF,
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
        let restarts = self.known.get(name).map_or(0, |k| k.restarts);
        self.known.insert(
            name.to_string(),
            Known {
                spec: spec.clone(),
                started: Instant::now(),
                restarts,
            },
        );
        Ok(pid)
    }

    /// Decides, by `policy`, whether the process that made `exit` is started
    /// again, and if so schedules it after its backoff (see [`next_event`]).
    /// Logs the exit status, the attempt and the wait, or why not.
    ///
    /// [`next_event`]: Self::next_event
    pub fn restart_later(&mut self, exit: &Exit, policy: Restart) {
        let failed = !matches!(&exit.status, Ok(s) if s.success());
        let wanted = match policy {
            Restart::Always => true,
            Restart::OnFailure => failed,
            Restart::Never => false,
        };
        let Some(known) = self.known.get_mut(&exit.name) else {
            return;
        };
        if !wanted {
            eprintln!(
                "mesh: {} {}; not restarting it (restart = {policy:?})",
                exit.name,
                exit.describe()
            );
            self.known.remove(&exit.name);
            return;
        }
        if known.started.elapsed() >= STABLE_RUN {
            known.restarts = 0;
        }
        if known.restarts >= MAX_RESTARTS {
            eprintln!(
                "mesh: {} {}; giving up on it after {MAX_RESTARTS} restarts in a row",
                exit.name,
                exit.describe()
            );
            self.known.remove(&exit.name);
            return;
        }
        known.restarts += 1;
        let wait = backoff(self.first_backoff, known.restarts);
        eprintln!(
            "mesh: {} {}; restarting it in {wait:?} (attempt {} of {MAX_RESTARTS})",
            exit.name,
            exit.describe(),
            known.restarts
        );
        let due = self.due_tx.clone();
        let name = exit.name.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = due.send(name).await;
        });
    }

    /// The next child to end or restart to make, whichever comes first.
    pub async fn next_event(&mut self) -> Event {
        loop {
            tokio::select! {
                Some(name) = self.due_rx.recv() => return Event::Due(name),
                Some(exit) = self.exits_rx.recv(), if !self.running.is_empty() => {
                    if self.running.remove(&exit.name).is_some() {
                        return Event::Exited(exit);
                    }
                }
                // Never: the due sender lives in `self`.
                else => return std::future::pending().await,
            }
        }
    }

    /// Starts `name` again from its spec, unless it was stopped meanwhile or is running.
    pub fn respawn(&mut self, name: &str) {
        if self.running.contains_key(name) {
            return;
        }
        let Some(spec) = self.known.get(name).map(|k| k.spec.clone()) else {
            return;
        };
        match self.spawn(&spec) {
            Ok(pid) => println!("mesh: restarted {name} (pid {pid})"),
            Err(e) => {
                // Reported like an exit, so the backoff and the limit apply.
                eprintln!("mesh: cannot restart {name}: {e:#}");
                let exit = Exit {
                    name: name.to_string(),
                    status: Err(std::io::Error::other("could not be started")),
                };
                self.restart_later(&exit, Restart::Always);
            }
        }
    }

    /// Whether a restart is pending for some process.
    pub fn restarting(&self) -> bool {
        self.known.keys().any(|name| !self.running.contains_key(name))
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
        // Stopped on purpose: never started again, even if a restart was pending.
        for name in names {
            self.known.remove(name);
        }
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

/// The wait before restart number `n` (from 1): doubling from `first`, capped.
fn backoff(first: Duration, n: u32) -> Duration {
    first
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

fn report_unclean(exit: &Exit) {
    if !matches!(&exit.status, Ok(s) if s.success()) {
        eprintln!("mesh: {} {}", exit.name, exit.describe());
    }
}

/// Copies a child's output to ours, a line at a time, behind its label.
async fn forward_lines(stream: impl AsyncRead + Unpin, label: String) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::with_capacity(256);
    while let Ok(Some(line)) = super::lines::next_line(&mut reader, &mut buf).await {
        crate::dashboard::logs::record(&label, &line);
        println!("{label} {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(FIRST_BACKOFF, 1), Duration::from_millis(200));
        assert_eq!(backoff(FIRST_BACKOFF, 2), Duration::from_millis(400));
        assert_eq!(backoff(FIRST_BACKOFF, 4), Duration::from_millis(1600));
        assert_eq!(backoff(FIRST_BACKOFF, 8), MAX_BACKOFF);
        assert_eq!(backoff(FIRST_BACKOFF, u32::MAX), MAX_BACKOFF);
    }

    fn sh(label: &str, script: &str) -> ProcessSpec {
        ProcessSpec {
            label: label.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            workdir: None,
        }
    }

    /// What a child printed, as the dashboard keeps it, once `count` lines are in.
    async fn kept_lines(workload: &str, count: usize) -> Vec<String> {
        let query = crate::dashboard::logs::Query {
            workload: Some(workload.into()),
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<String> = crate::dashboard::logs::search(&query)
                .into_iter()
                .map(|l| l.line)
                .collect();
            if lines.len() >= count || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_child_printing_bytes_that_are_not_utf8_or_endless_lines_is_still_read() {
        let mut supervisor = Supervisor::new(4);
        let script = r"printf 'bad \377 byte\n'; head -c 100000 /dev/zero | tr '\0' x; printf '\nstill read\n'";
        supervisor.spawn(&sh("odd-output", script)).expect("spawn");
        let exit = supervisor.next_exit().await;
        assert_eq!(exit.describe(), "exited with status 0");
        let lines = kept_lines("odd-output", 3).await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "bad \u{fffd} byte");
        let cut = super::super::lines::MAX_LINE;
        assert!(lines[1].starts_with(&"x".repeat(cut)), "{}", lines[1].len());
        assert!(lines[1].ends_with(&format!("({} more bytes of this line dropped)", 100_000 - cut)));
        assert_eq!(lines[2], "still read");
    }

    #[tokio::test]
    async fn a_failing_process_is_restarted_until_the_limit_and_policies_are_followed() {
        let mut supervisor = Supervisor::new(4);
        supervisor.first_backoff = Duration::from_millis(1);
        supervisor.spawn(&sh("fail", "exit 3")).expect("spawn");
        let mut restarts = 0;
        let began = Instant::now();
        loop {
            let exit = supervisor.next_exit().await;
            assert_eq!(exit.describe(), "exited with status 3");
            supervisor.restart_later(&exit, Restart::OnFailure);
            if !supervisor.restarting() {
                break;
            }
            let Event::Due(name) = supervisor.next_event().await else {
                panic!("nothing runs, so the next event is the restart");
            };
            supervisor.respawn(&name);
            restarts += 1;
        }
        assert_eq!(restarts, MAX_RESTARTS, "gave up after the limit");
        let waits: Duration = (1..=MAX_RESTARTS).map(|n| backoff(Duration::from_millis(1), n)).sum();
        assert!(
            began.elapsed() >= waits,
            "{:?} < {waits:?}: the backoff was waited",
            began.elapsed()
        );

        // A clean exit is restarted only under `always`.
        supervisor.spawn(&sh("ok", "exit 0")).expect("spawn");
        let exit = supervisor.next_exit().await;
        supervisor.restart_later(&exit, Restart::OnFailure);
        assert!(!supervisor.restarting());
        supervisor.spawn(&sh("ok", "exit 0")).expect("spawn");
        let exit = supervisor.next_exit().await;
        supervisor.restart_later(&exit, Restart::Always);
        assert!(supervisor.restarting());
        // Stopped on purpose while its restart is pending: it stays stopped.
        supervisor.stop(&["ok".to_string()], Duration::from_secs(1)).await;
        let Event::Due(name) = supervisor.next_event().await else {
            panic!("the pending restart comes due");
        };
        supervisor.respawn(&name);
        assert!(supervisor.is_empty(), "not started again");
    }
}
