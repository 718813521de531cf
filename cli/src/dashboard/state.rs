//! What the dashboard knows about the running mesh: the processes the
//! launcher started (it reports each spawn and exit here), each sidecar's
//! readiness, and the recent scrapes the golden metrics are computed from.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use meshwork_config::MeshConfig;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use super::{
    golden::{self, Stat},
    scrape::Snapshot,
    traces::Traces,
};

/// The golden metrics cover this much time.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One process as the launcher reported it.
#[derive(Debug, Clone)]
struct Process {
    pid: u32,
    running: bool,
    /// Starts after the first.
    restarts: u32,
    since: Instant,
}

#[derive(Default)]
struct Inner {
    config: Option<MeshConfig>,
    processes: BTreeMap<String, Process>,
    /// By sidecar label.
    ready: HashMap<String, bool>,
    snapshots: VecDeque<Snapshot>,
    stat: Stat,
    /// Where spans go when a collector is configured, instead of `traces`.
    collector: Option<String>,
}

/// The launcher's and the scraper's shared view; cheap to clone.
#[derive(Clone, Default)]
pub struct Board {
    inner: Arc<Mutex<Inner>>,
    /// The spans received when the launcher is the collector.
    pub traces: Traces,
}

/// A row of the workloads table.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRow {
    pub name: String,
    /// `app` or `sidecar`.
    pub kind: &'static str,
    /// The mesh service or client it belongs to.
    pub service: String,
    pub replica: u16,
    pub pid: Option<u32>,
    pub running: bool,
    pub ready: bool,
    pub restarts: u32,
    pub uptime_seconds: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// Seconds until the workload's certificate expires (negative once it has).
    pub cert_expires_in_seconds: Option<i64>,
}

impl Board {
    /// The launcher started `label` as `pid`.
    pub fn started(&self, label: &str, pid: u32) {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        inner
            .processes
            .entry(label.to_string())
            .and_modify(|p| {
                p.restarts += 1;
                p.pid = pid;
                p.running = true;
                p.since = now;
            })
            .or_insert(Process {
                pid,
                running: true,
                restarts: 0,
                since: now,
            });
    }

    /// The launcher saw `label` end.
    pub fn exited(&self, label: &str) {
        if let Some(p) = self.inner.lock().processes.get_mut(label) {
            p.running = false;
        }
    }

    /// The mesh as last applied (after start and after each edit of mesh.toml).
    pub fn set_config(&self, config: &MeshConfig) {
        self.inner.lock().config = Some(config.clone());
    }

    /// Spans go to the collector at `endpoint`, not to the launcher.
    pub fn set_collector(&self, endpoint: String) {
        self.inner.lock().collector = Some(endpoint);
    }

    pub fn collector(&self) -> Option<String> {
        self.inner.lock().collector.clone()
    }

    pub fn config(&self) -> Option<MeshConfig> {
        self.inner.lock().config.clone()
    }

    /// A scrape's results: keeps the window's snapshots and recomputes the figures.
    pub fn scraped(&self, snapshot: Snapshot, ready: HashMap<String, bool>) {
        let mut inner = self.inner.lock();
        inner.ready = ready;
        let now = snapshot.at;
        inner.snapshots.push_back(snapshot);
        while inner
            .snapshots
            .get(1)
            .is_some_and(|s| now.saturating_duration_since(s.at) >= WINDOW)
        {
            inner.snapshots.pop_front();
        }
        if let (Some(first), Some(last)) = (inner.snapshots.front(), inner.snapshots.back()) {
            inner.stat = golden::compute(first, last);
        }
    }

    pub fn stat(&self) -> Stat {
        self.inner.lock().stat.clone()
    }

    /// Every app and sidecar the config names, with what is known of it.
    /// Reads a few small files (/proc, the certificates) after the lock is let go.
    pub fn workloads(&self) -> Vec<WorkloadRow> {
        let mut rows = self.rows();
        let mut expiry: HashMap<String, Option<i64>> = HashMap::new();
        let certs = self
            .config()
            .map(|c| meshwork_certs::CertPaths::new(&crate::certs::dir(&c)));
        for row in &mut rows {
            row.memory_bytes = row.pid.filter(|_| row.running).and_then(resident_bytes);
            if let Some(certs) = &certs {
                row.cert_expires_in_seconds = *expiry
                    .entry(row.service.clone())
                    .or_insert_with(|| cert_expires_in(&certs.leaf_cert(&row.service)));
            }
        }
        rows
    }

    fn rows(&self) -> Vec<WorkloadRow> {
        let inner = self.inner.lock();
        let Some(config) = &inner.config else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        for spec in config.sidecars() {
            let label = crate::launcher::workload_label(&spec);
            let sidecar = format!("{label}-proxy");
            let ready = inner.ready.get(&sidecar).copied().unwrap_or(false);
            let kinds = spec.app.map(|_| (label.clone(), "app")).into_iter();
            for (name, kind) in kinds.chain([(sidecar, "sidecar")]) {
                let process = inner.processes.get(&name);
                let running = process.is_some_and(|p| p.running);
                rows.push(WorkloadRow {
                    kind,
                    service: spec.name.to_string(),
                    replica: spec.replica,
                    pid: process.map(|p| p.pid),
                    running,
                    ready: running && ready,
                    restarts: process.map_or(0, |p| p.restarts),
                    uptime_seconds: process.filter(|p| p.running).map(|p| p.since.elapsed().as_secs()),
                    memory_bytes: None,
                    cert_expires_in_seconds: None,
                    name,
                });
            }
        }
        rows
    }
}

/// Resident memory from /proc (Linux); `None` elsewhere or once it is gone.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Seconds until the PEM certificate at `path` expires.
fn cert_expires_in(path: &std::path::Path) -> Option<i64> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(not_after - now)
}
