//! `mesh gateway`: runs the mesh's edge from the `[gateway]` section of
//! mesh.toml. The launcher starts it once its sidecar is live.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct GatewayArgs {
    /// The mesh description.
    #[arg(long, default_value = "mesh.toml")]
    config: PathBuf,
    /// Which of `[gateway] replicas` this is (its ports move by
    /// `replica × replica_port_step`).
    #[arg(long, default_value_t = 0)]
    replica: u16,
}

pub async fn run(args: GatewayArgs) -> Result<()> {
    let stop = crate::signals::terminated();
    // Spans are flushed when the guard drops, after the gateway has stopped.
    let _telemetry = meshwork_telemetry::init("gateway");
    meshwork_gateway::run_replica(&args.config, args.replica, stop).await?;
    Ok(())
}
