//! `mesh-proxy`: the sidecar alone, the same as `mesh proxy`. A binary of its
//! own because a sidecar runs beside every app: linked without the launcher
//! and the shop's services, its code (most of its resident memory) is about a
//! third smaller.

#[path = "../proxy_cmd.rs"]
mod proxy_cmd;
#[path = "../signals.rs"]
mod signals;

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "mesh-proxy", version, about = "Meshwork's sidecar proxy")]
struct Cli {
    #[command(flatten)]
    args: proxy_cmd::ProxyArgs,
}

fn main() -> ExitCode {
    match proxy_cmd::run(Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-proxy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
