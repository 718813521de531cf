//! A proxy child process: started in a process group of its own with its
//! output in a log file, and the whole group (nginx and nghttpx fork
//! workers) killed when it is dropped, also on error or panic. A child that
//! supervises processes of its own (`mesh up`) is asked to stop first, so
//! that it stops them.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::process::{Child, Command};

pub struct ProxyChild {
    name: String,
    child: Child,
    pid: u32,
    log: PathBuf,
    /// How long it gets to end after SIGTERM before SIGKILL; none: SIGKILL at once.
    stop_grace: Option<Duration>,
}

impl ProxyChild {
    /// Starts `command`, its stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<ProxyChild> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: one signal reaches the master and its workers,
            // and Ctrl-C in our terminal does not (we stop them ourselves).
            .process_group(0)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.as_std().get_program()))?;
        let pid = child.id().with_context(|| format!("{name} exited at once"))?;
        Ok(ProxyChild {
            name: name.to_string(),
            child,
            pid,
            log: log.to_path_buf(),
            stop_grace: None,
        })
    }

    /// Stopped by SIGTERM, then SIGKILL if it is still running after `grace`.
    pub fn with_stop_grace(mut self, grace: Duration) -> ProxyChild {
        self.stop_grace = Some(grace);
        self
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// An error naming the exit status and quoting the log if the process has ended.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("{} exited ({status}); its output:\n{}", self.name, self.log_tail()),
            Err(error) => bail!("{}: {error}", self.name),
        }
    }

    /// The last lines of the process's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ProxyChild {
    fn drop(&mut self) {
        if let (Some(grace), Ok(pid)) = (self.stop_grace, i32::try_from(self.pid)) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
            let until = Instant::now() + grace;
            // Blocking, in a drop: a scenario ends between steps, with nothing else to run.
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Ok(group) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        let _ = self.child.start_kill();
        // Reap it now if it is already gone; tokio reaps it later otherwise.
        let _ = self.child.try_wait();
    }
}
