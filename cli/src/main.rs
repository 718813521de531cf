//! `mesh`: the one binary of Meshwork. It launches the whole mesh on one
//! machine (`mesh up`), and it is also what each launched process runs: a
//! sidecar (`mesh proxy`) or a service (`mesh serve`). One binary keeps the
//! launcher and the processes it starts at the same version, and is what a
//! Kubernetes pod's app and sidecar containers run too.

mod certs;
mod demo;
mod launcher;
mod serve;
mod signals;

use std::{path::PathBuf, process::ExitCode};

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
    /// Run one workload's sidecar proxy.
    Proxy(ProxyArgs),
    /// Run one service's app.
    Serve(serve::ServeCommand),
    /// Walk through the shop against a running mesh: register, browse, fill a cart, check out.
    Demo(demo::DemoArgs),
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// The mesh description.
    #[arg(long, default_value = "mesh.toml", env = "MESH_CONFIG")]
    config: PathBuf,
    /// The workload (service or client) whose sidecar this is.
    #[arg(long)]
    name: String,
    /// Which replica of the service.
    #[arg(long, default_value_t = 0)]
    replica: u16,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async move {
                match cli.command {
                    Command::Up(args) => launcher::up(args).await,
                    Command::Certs(args) => certs::run(args),
                    Command::Proxy(args) => run_proxy(args).await,
                    Command::Serve(command) => serve::run(command).await,
                    Command::Demo(args) => demo::run(args).await,
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain of context on one line.
            eprintln!("mesh: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_proxy(args: ProxyArgs) -> Result<()> {
    // Spans are flushed when the guard drops, after the sidecar has drained.
    let _telemetry = meshwork_telemetry::init(&format!("{}-proxy", args.name));
    let config = meshwork_config::MeshConfig::load(&args.config)?;
    let options = meshwork_proxy::SidecarOptions::from_config(config, &args.name, args.replica)?;
    meshwork_proxy::run(options, signals::terminated()).await?;
    Ok(())
}
