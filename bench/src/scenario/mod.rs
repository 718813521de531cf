//! The paths from the load generator to the echo server: starting each
//! scenario's proxies, waiting until the whole path answers, and stopping
//! everything when the scenario is dropped.

mod child;
mod direct;
mod mesh_up;
mod meshwork;
mod nghttpx;
mod nginx;
pub(crate) mod pki;

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

pub use child::ProxyChild;
pub(crate) use mesh_up::spawn_launcher;
pub(crate) use nginx::main_conf as nginx_conf;

use crate::{
    args::ScenarioKind,
    load,
    plan::{MeshMode, Plan},
    procstat::Scope,
};

/// How long a scenario may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time between two readiness checks while a scenario starts.
const POLL: Duration = Duration::from_millis(25);

/// One proxy on the path, whose CPU and memory are measured when it is a process.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// `outbound` (the client's side) or `inbound` (the server's side).
    pub role: &'static str,
    /// None when the proxy runs inside this process.
    pub pid: Option<u32>,
    /// What its readings sum: its process tree, or (the launcher) itself alone.
    pub scope: Scope,
}

/// A running scenario. Dropping it stops its processes and removes its files.
pub struct Target {
    pub kind: ScenarioKind,
    /// Where the load generator connects (plaintext HTTP/2).
    pub addr: SocketAddr,
    /// How the proxies run, for the report.
    pub mode: String,
    pub proxies: Vec<Proxy>,
    /// Dropped first: the processes stop before their folder is removed.
    children: Vec<ProxyChild>,
    /// Temp dirs, in-process sidecars: whatever must live as long as the scenario.
    _keep: Vec<Box<dyn Send + Sync>>,
}

pub enum Setup {
    Ready(Target),
    /// The scenario cannot run here (its proxy is not installed).
    Skipped(String),
}

/// Starts scenario `kind` in front of the echo server at `echo`, and waits
/// until a call through it succeeds. Sidecar processes export their spans
/// to `spans_to` when given.
pub async fn start(kind: ScenarioKind, plan: &Plan, echo: SocketAddr, spans_to: Option<&str>) -> Result<Setup> {
    let setup = match kind {
        ScenarioKind::Direct => Setup::Ready(direct::start(echo)),
        ScenarioKind::MeshworkCollector if matches!(plan.mesh, MeshMode::InProcess) => {
            Setup::Skipped("the sidecars run in-process, so they export no spans".into())
        }
        ScenarioKind::Meshwork | ScenarioKind::MeshworkCollector => {
            let mut target = meshwork::start(&plan.mesh, echo, spans_to).await?;
            target.kind = kind;
            Setup::Ready(target)
        }
        ScenarioKind::MeshworkUp => match &plan.mesh {
            MeshMode::InProcess => Setup::Skipped("the sidecars run in-process, so there is no launcher".into()),
            MeshMode::Process(sidecar) => {
                // `mesh` runs the launcher; it is built with `mesh-proxy`, beside it.
                let mesh = sidecar.with_file_name("mesh");
                if mesh.is_file() {
                    Setup::Ready(mesh_up::start(&mesh, echo).await?)
                } else {
                    Setup::Skipped(format!("no `mesh` binary beside {}", sidecar.display()))
                }
            }
        },
        ScenarioKind::Nginx => match &plan.nginx_bin {
            Some(bin) => Setup::Ready(nginx::start(bin, plan.proxy_workers, echo).await?),
            None => Setup::Skipped("nginx is not installed (Debian: apt-get install nginx)".into()),
        },
        ScenarioKind::Nghttpx => match &plan.nghttpx_bin {
            Some(bin) => Setup::Ready(nghttpx::start(bin, plan.proxy_workers, echo).await?),
            None => Setup::Skipped("nghttpx is not installed (Debian: apt-get install nghttp2-proxy)".into()),
        },
    };
    Ok(setup)
}

impl Target {
    /// A scenario of two proxy processes, `children[0]` outbound and
    /// `children[1]` inbound (none for in-process sidecars), and whatever
    /// else must live as long as it.
    fn proxy_pair(
        kind: ScenarioKind,
        addr: SocketAddr,
        mode: String,
        children: Vec<ProxyChild>,
        keep: Vec<Box<dyn Send + Sync>>,
    ) -> Self {
        let pid = |i: usize| children.get(i).map(ProxyChild::pid);
        let proxies = vec![
            Proxy {
                role: "outbound",
                pid: pid(0),
                scope: Scope::Tree,
            },
            Proxy {
                role: "inbound",
                pid: pid(1),
                scope: Scope::Tree,
            },
        ];
        Target {
            kind,
            addr,
            mode,
            proxies,
            children,
            _keep: keep,
        }
    }

    /// Waits until every admin address answers `GET /ready` with 200 and a
    /// call through the whole path succeeds, failing early (with the
    /// process's output) if a proxy exits.
    async fn wait_ready(&mut self, admins: &[SocketAddr]) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for child in &mut self.children {
                child.check_running()?;
            }
            let mut waiting_for = None;
            for &admin in admins {
                match http_get(admin, "/ready").await {
                    Ok((200, _)) => {}
                    answer => waiting_for = Some(format!("{admin}/ready: {answer:?}")),
                }
            }
            if waiting_for.is_none() {
                match load::probe(self.addr).await {
                    Ok(()) => return Ok(()),
                    Err(error) => waiting_for = Some(format!("a call through {}: {error:#}", self.addr)),
                }
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .children
                    .iter()
                    .map(|c| format!("--- {} ---\n{}", c.pid(), c.log_tail()))
                    .collect();
                bail!(
                    "{} not ready after {START_TIMEOUT:?}; waiting for {}\n{}",
                    self.kind,
                    waiting_for.unwrap_or_default(),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `N` distinct ports on 127.0.0.1 that were free a moment ago, for
/// processes' config files (each process binds its own; the window for a
/// clash with another program is tiny). All `N` are held until all are
/// found: released one by one, the kernel may hand the same port out twice,
/// and a sidecar then refuses its mesh.toml.
pub(crate) fn free_ports<const N: usize>() -> Result<[SocketAddr; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port"))
        .collect::<Result<Vec<_>>>()?;
    let addrs = listeners
        .iter()
        .map(|listener| listener.local_addr().context("finding a free port"))
        .collect::<Result<Vec<_>>>()?;
    addrs
        .try_into()
        .map_err(|_| anyhow::anyhow!("found fewer than {N} ports"))
}

/// Open files a peer proxy may have: nginx holds an upstream connection per
/// proxied stream (a thousand open streams need a thousand and more), so the
/// usual soft limit of 1,024 is too low. As high as the hard limit allows.
fn open_files_limit() -> u64 {
    let hard =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(65536, |(_, hard)| hard);
    hard.min(65536)
}

/// `GET path` over HTTP/1.1: the status code and the body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .context("no answer within 2 s")??;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {raw:?}"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports: [SocketAddr; 256] = free_ports().expect("ports");
        let distinct: HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
    }
}
