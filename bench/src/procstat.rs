//! CPU time and memory of a proxy, read from /proc: the process and every
//! process under it (nginx and nghttpx each run a master and workers), or
//! the process alone (`mesh up`'s launcher, whose children are measured as
//! the sidecars they are).

use std::{collections::HashMap, path::Path, time::Duration};

use anyhow::{Context, Result, bail};

/// One reading of a process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSample {
    /// User + system CPU time consumed so far, summed over the tree.
    pub cpu: Duration,
    /// Resident memory now (VmRSS), summed over the tree, bytes.
    pub rss: u64,
    /// Peak resident memory (VmHWM) since start or the last [`reset_peak`],
    /// summed over the tree, bytes.
    pub peak_rss: u64,
}

/// Which processes a reading sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The process and all its descendants.
    Tree,
    /// The process alone.
    Process,
}

/// Reads `pid`, with its descendants or alone.
pub fn sample(pid: u32, scope: Scope) -> Result<ProcSample> {
    let ticks = ticks_per_second()?;
    let mut total = ProcSample::default();
    let pids = match scope {
        Scope::Tree => tree(pid)?,
        Scope::Process => vec![pid],
    };
    for p in pids {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat"));
        let status = std::fs::read_to_string(format!("/proc/{p}/status"));
        let (Ok(stat), Ok(status)) = (stat, status) else {
            // Exited between listing and reading: it no longer uses anything.
            if p == pid {
                bail!("process {pid} has exited");
            }
            continue;
        };
        let stat = parse_stat(&stat).with_context(|| format!("/proc/{p}/stat"))?;
        total.cpu += Duration::from_secs_f64((stat.utime + stat.stime) as f64 / ticks as f64);
        total.rss += status_kib(&status, "VmRSS").unwrap_or(0) * 1024;
        total.peak_rss += status_kib(&status, "VmHWM").unwrap_or(0) * 1024;
    }
    Ok(total)
}

/// Resets the peak-RSS mark (VmHWM) of `pid` and its descendants to their
/// current RSS, so the next [`sample`] shows the peak of one step alone.
/// Returns false where the kernel refused (then peaks run from the start).
pub fn reset_peak(pid: u32) -> bool {
    tree(pid).is_ok_and(|pids| {
        pids.iter()
            .all(|p| std::fs::write(format!("/proc/{p}/clear_refs"), "5").is_ok())
    })
}

/// CPU time the hypervisor has taken from this machine's CPUs since boot,
/// summed over them: the `steal` column of /proc/stat's `cpu` line. On a
/// virtual machine a CPU that sleeps when idle waits for the host to run it
/// again when woken, and that wait counts here: a step with much stolen
/// time measured the host's scheduling as much as the proxies. `None` where
/// the kernel does not report it.
pub fn stolen() -> Option<Duration> {
    let ticks = ticks_per_second().ok()?;
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    Some(Duration::from_secs_f64(steal_ticks(&text)? as f64 / ticks as f64))
}

/// The `steal` field (the 8th number) of the `cpu` line of /proc/stat.
fn steal_ticks(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace().nth(8)?.parse().ok()
}

/// Clock ticks per second, the unit of utime and stime in /proc/<pid>/stat.
fn ticks_per_second() -> Result<u64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .context("sysconf(_SC_CLK_TCK)")?
        .context("sysconf(_SC_CLK_TCK) has no value")?;
    u64::try_from(ticks)
        .ok()
        .filter(|&t| t > 0)
        .context("sysconf(_SC_CLK_TCK) is not positive")
}

/// The descendant of `pid` whose arguments contain `args` in a row (as
/// `--name echo --replica 1`), if one runs.
pub fn find_descendant(pid: u32, args: &[&str]) -> Result<Option<u32>> {
    Ok(tree(pid)?.into_iter().skip(1).find(|p| {
        std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|raw| {
            let argv: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
            argv.windows(args.len())
                .any(|w| w.iter().zip(args).all(|(a, b)| *a == b.as_bytes()))
        })
    }))
}

/// The descendant of `pid` whose command name (`/proc/<pid>/comm`) is
/// `name`: for programs that rewrite their arguments, as redis-server does.
pub fn find_descendant_named(pid: u32, name: &str) -> Result<Option<u32>> {
    Ok(tree(pid)?
        .into_iter()
        .skip(1)
        .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|comm| comm.trim_end() == name)))
}

/// `pid` and all its descendants, found through each process's parent id.
fn tree(pid: u32) -> Result<Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(Path::new("/proc").join(p.to_string()).join("stat"));
        if let Some(stat) = stat.ok().and_then(|s| parse_stat(&s).ok()) {
            children.entry(stat.ppid).or_default().push(p);
        }
    }
    let mut found = vec![pid];
    let mut next = 0;
    while next < found.len() {
        if let Some(kids) = children.get(&found[next]) {
            found.extend(kids);
        }
        next += 1;
    }
    Ok(found)
}

#[derive(Debug, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
}

/// The fields we need of /proc/<pid>/stat. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are
/// counted from the last `)`.
fn parse_stat(text: &str) -> Result<Stat> {
    let (_, rest) = text.rsplit_once(')').context("no ')' after the command name")?;
    // rest: " S ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ..."
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        // Field numbers as in proc(5): `state` is field 3, at index 0 here.
        let raw = fields.get(n - 3).with_context(|| format!("field {n} missing"))?;
        raw.parse().with_context(|| format!("field {n}: {raw:?}"))
    };
    Ok(Stat {
        ppid: u32::try_from(field(4)?).context("ppid")?,
        utime: field(14)?,
        stime: field(15)?,
    })
}

/// A `Key:   1234 kB` line of /proc/<pid>/status, in KiB.
fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let text = "4242 (nginx: a) b) S 17 4242 4242 0 -1 4194560 1 2 3 4 250 75 0 0 20 0 1 0 123 4096 300";
        assert_eq!(
            parse_stat(text).expect("parses"),
            Stat {
                ppid: 17,
                utime: 250,
                stime: 75
            }
        );
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn steal_of_the_cpu_line() {
        let text = "cpu  2323283 10857 370332 6277522 18768 0 33232 39803 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(steal_ticks(text), Some(39803));
        assert_eq!(steal_ticks("cpu  1 2 3 4\n"), None, "a kernel without the field");
        assert!(stolen().is_some(), "this Linux reports steal time");
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tmesh\nVmHWM:\t   10240 kB\nVmRSS:\t    8192 kB\n";
        assert_eq!(status_kib(text, "VmHWM"), Some(10240));
        assert_eq!(status_kib(text, "VmRSS"), Some(8192));
        assert_eq!(status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn finds_a_child_by_its_arguments() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30", "procstat-test-marker"])
            .spawn()
            .expect("sh runs");
        let me = std::process::id();
        let found = find_descendant(me, &["sleep 30", "procstat-test-marker"]).expect("reads /proc");
        let missing = find_descendant(me, &["procstat-test-marker", "sleep 30"]).expect("reads /proc");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, Some(child.id()));
        assert_eq!(missing, None, "arguments must match in their order");
    }

    #[test]
    fn reads_this_process() {
        let me = sample(std::process::id(), Scope::Tree).expect("sample self");
        assert!(me.rss > 0 && me.peak_rss >= me.rss, "{me:?}");
        // Burn CPU until a clock tick shows it (bounded, for a busy machine).
        let before = me.cpu;
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after <= before && start.elapsed() < Duration::from_secs(5) {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            after = sample(std::process::id(), Scope::Tree).expect("sample self").cpu;
        }
        std::hint::black_box(x);
        assert!(after > before, "{before:?} → {after:?}");
    }
}
