//! `nghttpx`: load generator → outbound nghttpx (h2c frontend, HTTP/2 over
//! TLS backend with a client certificate, verifying the server) → inbound
//! nghttpx (TLS frontend with `--verify-client`, h2c backend to the app) →
//! echo server. nghttpx multiplexes calls onto its backend connections, as
//! the sidecars do. Flow-control windows are raised from nghttpx's 64 KiB
//! defaults to hyper's (what the sidecars and the echo server use), and
//! concurrent streams per connection to the sidecars' 1,024.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context, Result};
use tokio::process::Command;

use super::{
    ProxyChild, Target, free_ports, open_files_limit,
    pki::{self, PeerCerts},
};
use crate::args::ScenarioKind;

pub async fn start(bin: &Path, workers: usize, echo: SocketAddr) -> Result<Target> {
    let dir = tempfile::Builder::new()
        .prefix("meshwork-bench-nghttpx-")
        .tempdir()
        .context("creating a temp dir")?;
    let certs = pki::peer_certs(dir.path())?;
    let [outbound, inbound] = free_ports()?;
    let mut children = Vec::new();
    for (name, args) in [
        ("outbound", outbound_args(outbound, inbound, &certs)),
        ("inbound", inbound_args(inbound, echo, &certs)),
    ] {
        let mut command = Command::new(bin);
        command.args(common_args(workers, dir.path(), name)).args(args);
        let log = dir.path().join(format!("{name}.log"));
        children.push(ProxyChild::spawn(&format!("{name} nghttpx"), command, &log)?);
    }
    let mode = format!("2 nghttpx instances, {workers} worker thread(s) each");
    let mut target = Target::proxy_pair(ScenarioKind::Nghttpx, outbound, mode, children, vec![Box::new(dir)]);
    target.wait_ready(&[]).await?;
    Ok(target)
}

fn common_args(workers: usize, dir: &Path, name: &str) -> Vec<String> {
    vec![
        // Not /etc/nghttpx/nghttpx.conf: only what is on this command line.
        "--conf=/dev/null".into(),
        format!("--workers={workers}"),
        "--no-ocsp".into(),
        format!("--rlimit-nofile={}", open_files_limit()),
        "--no-via".into(),
        "--no-server-push".into(),
        format!("--errorlog-file={}/{name}-error.log", dir.display()),
        "--log-level=WARN".into(),
        "--frontend-http2-max-concurrent-streams=1024".into(),
        "--frontend-http2-window-size=1048576".into(),
        "--frontend-http2-connection-window-size=1048576".into(),
        "--backend-http2-window-size=1048576".into(),
        "--backend-http2-connection-window-size=1048576".into(),
        "--backend-read-timeout=60s".into(),
        "--frontend-read-timeout=300s".into(),
    ]
}

fn outbound_args(listen: SocketAddr, inbound: SocketAddr, certs: &PeerCerts) -> Vec<String> {
    vec![
        format!("--frontend={},{};no-tls", listen.ip(), listen.port()),
        format!(
            "--backend={},{};;proto=h2;tls;sni=localhost",
            inbound.ip(),
            inbound.port()
        ),
        format!("--cacert={}", certs.ca.display()),
        format!("--client-private-key-file={}", certs.client_key.display()),
        format!("--client-cert-file={}", certs.client_cert.display()),
    ]
}

fn inbound_args(listen: SocketAddr, app: SocketAddr, certs: &PeerCerts) -> Vec<String> {
    vec![
        format!("--frontend={},{}", listen.ip(), listen.port()),
        format!("--backend={},{};;proto=h2", app.ip(), app.port()),
        "--verify-client".into(),
        format!("--verify-client-cacert={}", certs.ca.display()),
        // Positional: the frontend's private key and certificate.
        certs.server_key.display().to_string(),
        certs.server_cert.display().to_string(),
    ]
}
