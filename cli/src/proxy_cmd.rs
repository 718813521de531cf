//! Running one sidecar: the arguments and the runtime. Shared by `mesh proxy`
//! and the lean `mesh-proxy` binary that `mesh up` starts (one source, so the
//! two cannot drift apart).

use std::path::PathBuf;

use anyhow::Result;

use crate::signals;

#[derive(clap::Args)]
pub struct ProxyArgs {
    /// The mesh description.
    #[arg(long, default_value = "mesh.toml", env = "MESH_CONFIG")]
    config: PathBuf,
    /// The workload (service or client) whose sidecar this is.
    #[arg(long)]
    name: String,
    /// Which replica of the service.
    #[arg(long, default_value_t = 0)]
    replica: u16,
    /// Worker threads. One (the default) runs the sidecar on a single-threaded
    /// runtime: beside an app on a small machine that costs the least CPU and
    /// memory per call, as no task ever moves between threads.
    #[arg(long, default_value_t = 1, env = "MESHWORK_PROXY_THREADS", value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
}

/// Runs the sidecar until SIGTERM or Ctrl-C, on a runtime of its own.
pub fn run(args: ProxyArgs) -> Result<()> {
    let mut builder = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(n));
            builder
        }
    };
    builder.enable_all().build()?.block_on(async move {
        let stop = signals::terminated();
        // Spans are flushed when the guard drops, after the sidecar has drained.
        let _telemetry = meshwork_telemetry::init(&format!("{}-proxy", args.name));
        let config = meshwork_config::MeshConfig::load(&args.config)?;
        let options = meshwork_proxy::SidecarOptions::from_config(config, &args.name, args.replica)?;
        meshwork_proxy::run(options, stop).await?;
        Ok(())
    })
}
