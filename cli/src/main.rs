//! `mesh`: the one binary of Meshwork. It launches the whole mesh on one
//! machine (`mesh up`), and it is also what each launched process runs: a
//! sidecar (`mesh proxy`) or a service (`mesh serve`). One binary keeps the
//! launcher and the processes it starts at the same version, and is what a
//! Kubernetes pod's app and sidecar containers run too.

mod certs;
mod dashboard;
mod demo;
mod gateway_cmd;
mod k8s;
mod launcher;
mod mcp_cmd;
mod observe;
mod proxy_cmd;
mod serve;
mod signals;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mesh", version, about = "Meshwork: a gRPC service mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Issue certificates if needed, start every service with its sidecar, and
    /// wait for Ctrl-C or SIGTERM.
    Up(launcher::UpArgs),
    /// Create the mesh CA and workload certificates (or renew those close to expiry).
    Certs(certs::CertsArgs),
    /// Run one workload's sidecar proxy (as the `mesh-proxy` binary does).
    Proxy(proxy_cmd::ProxyArgs),
    /// Run one service's app.
    Serve(serve::ServeCommand),
    /// Run the mesh's gateway: REST/JSON, gRPC-Web and gRPC for clients outside the mesh.
    Gateway(gateway_cmd::GatewayArgs),
    /// Serve the gateway's MCP tools over stdio for a local agent (`mesh mcp --stdio`).
    Mcp(mcp_cmd::McpArgs),
    /// Walk through the shop against a running mesh: register, browse, fill a cart, check out.
    Demo(demo::DemoArgs),
    /// Render the mesh as Kubernetes manifests (YAML) for a namespace.
    K8s(k8s::K8sArgs),
    /// Print the golden metrics of a running mesh per service and per edge.
    Stat(observe::StatArgs),
    /// Print one trace of a running mesh as an indented tree with durations.
    Trace(observe::TraceArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => on_runtime(launcher::up(args)),
        Command::Certs(args) => certs::run(args),
        // A sidecar builds a runtime of its own size.
        Command::Proxy(args) => proxy_cmd::run(args),
        Command::Serve(command) => on_runtime(serve::run(command)),
        Command::Gateway(args) => on_runtime(gateway_cmd::run(args)),
        Command::Mcp(args) => on_runtime(mcp_cmd::run(args)),
        Command::Demo(args) => on_runtime(demo::run(args)),
        Command::K8s(args) => k8s::run(args),
        Command::Stat(args) => on_runtime(observe::stat(args)),
        Command::Trace(args) => on_runtime(observe::trace(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain of context on one line.
            eprintln!("mesh: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `task` to completion on a multi-threaded runtime.
fn on_runtime(task: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(task)
}
