//! `mesh mcp --stdio`: the gateway's MCP tools over standard input and
//! output, for agents that launch local servers; calls go through the
//! sidecar of a workload of mesh.toml (`--via`). No logs on stdout: it
//! carries the protocol.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

#[derive(Args)]
pub struct McpArgs {
    /// Speak MCP on stdin/stdout (the one transport of this command).
    #[arg(long)]
    stdio: bool,
    /// The mesh description.
    #[arg(long, default_value = "mesh.toml")]
    config: PathBuf,
    /// The workload whose sidecar the calls go through (a client of mesh.toml).
    #[arg(long, default_value = "demo")]
    via: String,
}

pub async fn run(args: McpArgs) -> Result<()> {
    if !args.stdio {
        bail!("say --stdio: MCP over HTTP is served by the gateway at /mcp");
    }
    meshwork_gateway::mcp::stdio::serve(&args.config, &args.via).await?;
    Ok(())
}
