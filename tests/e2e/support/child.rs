//! A helper program (a Python client, a browser driver) run to completion
//! with a time limit, so that a client that hangs fails its test with what it
//! printed instead of holding the suite until CI's own limit.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

/// Runs `command` in a process group of its own and returns its output; past
/// `within`, kills the whole group (a client and what it launched) and
/// panics with everything it printed.
pub fn output_within(command: &mut Command, within: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let readers = [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ]
    .map(|mut stream| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            bytes
        })
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The group is gone (or the child ended and closed its pipes); a
    // grandchild still holding them is killed with the group.
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let [stdout, stderr] = readers.map(|r| r.join().expect("reader thread"));
    match status {
        Some(status) => Output { status, stdout, stderr },
        None => panic!(
            "{command:?} did not finish within {within:?}; it printed:\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}
