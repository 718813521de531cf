//! The peers the gateway is measured against: grpc-gateway, built here from
//! Debian's Go packages against the shop's contracts, and nginx as a plain
//! HTTP/JSON reverse proxy with `proxy_cache` and `limit_req` (the cost of an
//! edge that does not transcode).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::scenario::{ProxyChild, nginx_conf};

/// The contracts grpc-gateway is generated from: the same files the mesh
/// compiles in, as `(path under proto/, Go package, text)`.
const CONTRACTS: &[(&str, &str, &str)] = &[
    (
        "shop/common/v1/money.proto",
        "common",
        include_str!("../../../proto/shop/common/v1/money.proto"),
    ),
    (
        "shop/catalog/v1/catalog.proto",
        "catalog",
        include_str!("../../../proto/shop/catalog/v1/catalog.proto"),
    ),
    (
        "shop/users/v1/users.proto",
        "users",
        include_str!("../../../proto/shop/users/v1/users.proto"),
    ),
];
const GOOGLE_API: &[(&str, &str)] = &[
    (
        "google/api/http.proto",
        include_str!("../../../proto/google/api/http.proto"),
    ),
    (
        "google/api/annotations.proto",
        include_str!("../../../proto/google/api/annotations.proto"),
    ),
];
const MAIN_GO: &str = include_str!("grpc_gateway_main.go");
/// Where Debian installs Go libraries (grpc-gateway's runtime, grpc-go, …).
const DEBIAN_GOCODE: &str = "/usr/share/gocode";
/// Import paths of the well-known types for the Go protobuf of Debian 12
/// (1.3): the `.proto` files in /usr/include name the newer packages.
const GO_IMPORTS: &str = "Mgoogle/api/annotations.proto=google.golang.org/genproto/googleapis/api/annotations,\
                          Mgoogle/protobuf/timestamp.proto=github.com/golang/protobuf/ptypes/timestamp";

/// Generates grpc-gateway's handlers for the shop's contracts and builds its
/// binary in `dir` (GOPATH mode, offline, from Debian's packages); an error
/// says which tool is missing.
pub async fn build_grpc_gateway(dir: &Path) -> Result<PathBuf> {
    for tool in ["go", "protoc", "protoc-gen-go", "protoc-gen-grpc-gateway"] {
        if which(tool).is_none() {
            bail!(
                "`{tool}` is not installed (Debian: apt-get install golang-go protobuf-compiler golang-goprotobuf-dev \
                 golang-grpc-gateway golang-github-grpc-ecosystem-grpc-gateway-dev golang-google-grpc-dev \
                 golang-google-genproto-dev)"
            );
        }
    }
    let protos = dir.join("proto");
    let src = dir.join("src");
    for (path, text) in GOOGLE_API {
        write(&protos.join(path), text)?;
    }
    for (path, package, text) in CONTRACTS {
        write(&protos.join(path), &for_old_protoc_gen_go(text, package))?;
    }
    write(&src.join("shopgw/cmd/main.go"), MAIN_GO)?;
    for (path, _, _) in CONTRACTS {
        let out = format!("plugins=grpc,{GO_IMPORTS}:{}", src.display());
        run(Command::new("protoc")
            .arg("-I")
            .arg(&protos)
            .args(["-I", "/usr/include"])
            .arg(format!("--go_out={out}"))
            .arg(format!(
                "--grpc-gateway_out=logtostderr=true,{GO_IMPORTS}:{}",
                src.display()
            ))
            .arg(path))
        .await
        .with_context(|| format!("generating grpc-gateway's code for {path}"))?;
    }
    let binary = dir.join("grpc-gateway-shop");
    run(Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg("shopgw/cmd")
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOPATH", format!("{}:{DEBIAN_GOCODE}", dir.display()))
        .env("GOCACHE", dir.join("cache")))
    .await
    .context("building grpc-gateway")?;
    Ok(binary)
}

/// Debian 12's protoc-gen-go (1.3) predates proto3 `optional` and wants a
/// `go_package`: the copy drops the keyword (only `UpdateProduct`'s request
/// has it; the wire format is the same) and names the package.
fn for_old_protoc_gen_go(text: &str, package: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let trimmed = line.trim_start();
        match trimmed.strip_prefix("optional ") {
            Some(rest) => out.push_str(&format!("{}{rest}", &line[..line.len() - trimmed.len()])),
            None => out.push_str(line),
        }
        out.push('\n');
        if trimmed.starts_with("package ") {
            out.push_str(&format!("option go_package = \"shopgw/{package}\";\n"));
        }
    }
    out
}

/// grpc-gateway serving REST on `listen`, calling gRPC at `backend`.
pub fn start_grpc_gateway(binary: &Path, listen: SocketAddr, backend: SocketAddr, log: &Path) -> Result<ProxyChild> {
    let mut command = Command::new(binary);
    command
        .arg("-listen")
        .arg(listen.to_string())
        .arg("-backend")
        .arg(backend.to_string())
        // As many threads as nginx has workers and the gateway has cores.
        .env(
            "GOMAXPROCS",
            std::thread::available_parallelism().map_or(1, |n| n.get()).to_string(),
        );
    ProxyChild::spawn("grpc-gateway", command, log)
}

/// The nginx listeners: the same JSON backend three ways.
pub struct NginxPorts {
    /// `proxy_pass` only.
    pub plain: SocketAddr,
    /// With `proxy_cache` (30 s) of every 200.
    pub cache: SocketAddr,
    /// With `proxy_cache` and a global `limit_req` no call reaches.
    pub cache_limited: SocketAddr,
}

/// nginx in front of the JSON backend at `json`, with `workers` worker
/// processes, its files in `prefix`.
pub fn start_nginx(
    bin: &Path,
    workers: usize,
    json: SocketAddr,
    ports: &NginxPorts,
    prefix: &Path,
) -> Result<ProxyChild> {
    let p = prefix.display();
    let location = |extra: &str| {
        format!(
            "location / {{ proxy_pass http://json; proxy_http_version 1.1; proxy_set_header Connection \"\"; {extra} }}"
        )
    };
    let cache = "proxy_cache shop; proxy_cache_valid 200 30s; proxy_cache_key $request_method$request_uri; \
                 add_header Cache-Status $upstream_cache_status;";
    let site = format!(
        r#"    proxy_cache_path {p}/cache levels=1:2 keys_zone=shop:10m max_size=64m inactive=60s use_temp_path=off;
    limit_req_zone $server_name zone=everyone:1m rate=1000000r/s;
    upstream json {{
        server {json};
        keepalive 1024;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{ listen {plain} backlog=4096; {plain_location} }}
    server {{ listen {cached} backlog=4096; {cache_location} }}
    server {{ listen {limited} backlog=4096; {limited_location} }}"#,
        plain = ports.plain,
        cached = ports.cache,
        limited = ports.cache_limited,
        plain_location = location(""),
        cache_location = location(cache),
        limited_location = location(&format!("{cache} limit_req zone=everyone burst=1000000 nodelay;")),
    );
    let conf = nginx_conf(prefix, workers, &site);
    let path = prefix.join("nginx.conf");
    write(&path, &conf)?;
    let mut command = Command::new(bin);
    command
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(prefix.join("error.log"));
    ProxyChild::spawn("nginx", command, &prefix.join("nginx.log"))
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

async fn run(command: &mut Command) -> Result<()> {
    let output = command.output().await.context("starting it")?;
    if !output.status.success() {
        bail!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_for_protoc_gen_go_names_its_package_and_drops_optional() {
        let text = "syntax = \"proto3\";\npackage shop.x.v1;\nmessage M {\n  optional int32 stock = 3;\n}\n";
        let copy = for_old_protoc_gen_go(text, "x");
        assert_eq!(
            copy,
            "syntax = \"proto3\";\npackage shop.x.v1;\noption go_package = \"shopgw/x\";\nmessage M {\n  int32 stock = 3;\n}\n"
        );
    }
}
