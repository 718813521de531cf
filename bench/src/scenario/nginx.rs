//! `nginx`: load generator → outbound nginx (h2c in, `grpc_pass grpcs://`
//! with a client certificate, verifying the server) → inbound nginx (TLS
//! with `ssl_verify_client on`, `grpc_pass grpc://` to the app) → echo
//! server. Settings a gRPC deployment would use: upstream keepalive (nginx
//! proxies each stream on a connection of its own; without a pool every
//! call would pay a TLS handshake), no access log, no body size limit, and
//! as many concurrent streams per connection as the sidecars accept.

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
        .prefix("meshwork-bench-nginx-")
        .tempdir()
        .context("creating a temp dir")?;
    let certs = pki::peer_certs(dir.path())?;
    let [outbound, inbound] = free_ports()?;
    let mut children = Vec::new();
    for (name, site) in [
        ("outbound", outbound_site(outbound, inbound, &certs)),
        ("inbound", inbound_site(inbound, echo, &certs)),
    ] {
        let prefix = dir.path().join(name);
        std::fs::create_dir_all(&prefix)?;
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, main_conf(&prefix, workers, &site)).context("writing nginx.conf")?;
        let mut command = Command::new(bin);
        command
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(prefix.join("error.log"));
        let log = dir.path().join(format!("{name}.log"));
        children.push(ProxyChild::spawn(&format!("{name} nginx"), command, &log)?);
    }
    let mode = format!("2 nginx instances, {workers} worker process(es) each");
    let mut target = Target::proxy_pair(ScenarioKind::Nginx, outbound, mode, children, vec![Box::new(dir)]);
    target.wait_ready(&[]).await?;
    Ok(target)
}

/// What every nginx of the bench shares (these two, and the edge
/// benchmark's JSON proxy): foreground, every path inside `prefix`, the
/// limits of a gRPC deployment, and `site` in the `http` block.
pub(crate) fn main_conf(prefix: &Path, workers: usize, site: &str) -> String {
    let p = prefix.display();
    let nofile = open_files_limit();
    // Run as root, nginx's workers would switch to `nobody`, who cannot
    // read the keys in our private temp dir.
    let user = if nix::unistd::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    format!(
        r#"# Written by meshwork-bench for one run.
daemon off;
master_process on;
{user}
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    # gRPC messages of 1 MiB and more; no limit, as in the sidecars.
    client_max_body_size 0;
    # nginx closes a client connection after this many calls by default (1000).
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 1024;
    grpc_read_timeout 60s;
    grpc_send_timeout 60s;
{site}
}}
"#
    )
}

fn outbound_site(listen: SocketAddr, inbound: SocketAddr, certs: &PeerCerts) -> String {
    format!(
        r#"    upstream inbound {{
        server {inbound};
        keepalive 1024;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
        # nginx opens one upstream connection per concurrent call; the default
        # backlog (511) drops SYNs at 1,024 streams and stalls calls for 1 s.
        listen {listen} http2 backlog=4096;
        location / {{
            grpc_pass grpcs://inbound;
            grpc_ssl_certificate {cert};
            grpc_ssl_certificate_key {key};
            grpc_ssl_trusted_certificate {ca};
            grpc_ssl_verify on;
            grpc_ssl_name localhost;
            grpc_ssl_session_reuse on;
        }}
    }}"#,
        cert = certs.client_cert.display(),
        key = certs.client_key.display(),
        ca = certs.ca.display(),
    )
}

fn inbound_site(listen: SocketAddr, app: SocketAddr, certs: &PeerCerts) -> String {
    format!(
        r#"    upstream app {{
        server {app};
        keepalive 1024;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {listen} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        location / {{
            grpc_pass grpc://app;
        }}
    }}"#,
        cert = certs.server_cert.display(),
        key = certs.server_key.display(),
        ca = certs.ca.display(),
    )
}
