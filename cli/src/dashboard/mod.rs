//! The dashboard `mesh up` serves on a loopback port: a page of our own
//! (static HTML, CSS and plain JavaScript compiled into the binary, no build
//! step) over a small JSON API with the workloads, the golden metrics per
//! service and per edge, the recent traces and the children's logs.
//!
//! The launcher reports spawns and exits to a [`Board`]; a task here scrapes
//! every sidecar's admin port every [`SCRAPE_EVERY`] and keeps the last
//! minute of counters. Nothing here is on a request's path.

mod api;
pub mod golden;
pub mod logs;
mod scrape;
mod state;
pub mod traces;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use tokio::net::TcpListener;

pub use state::Board;

/// How often the sidecars are scraped.
pub const SCRAPE_EVERY: Duration = Duration::from_secs(2);

/// Binds `listen` (or, when it is taken, any free loopback port, so that
/// several meshes can run side by side) and serves the dashboard there.
/// Returns the address it serves on.
pub async fn start(board: Board, listen: SocketAddr) -> Result<SocketAddr> {
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && listen.port() != 0 => {
            let any = SocketAddr::new(listen.ip(), 0);
            let listener = TcpListener::bind(any)
                .await
                .with_context(|| format!("binding the dashboard to {any}"))?;
            eprintln!("mesh: {listen} is in use; the dashboard takes another port");
            listener
        }
        Err(e) => return Err(e).with_context(|| format!("binding the dashboard to {listen}")),
    };
    let addr = listener.local_addr().context("reading the dashboard's address")?;
    tokio::spawn(scrape_forever(board.clone()));
    let app = api::router(board);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("mesh: the dashboard stopped: {e}");
        }
    });
    Ok(addr)
}

/// Where the children send their spans: to the collector configured in the
/// launcher's environment (the children inherit it), else to the launcher's
/// own, whose address is returned as variables to set on every child.
pub async fn collect_traces(board: &Board) -> Result<Vec<(String, String)>> {
    let configured = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty());
    if let Some(endpoint) = configured {
        board.set_collector(endpoint.trim().to_string());
        return Ok(Vec::new());
    }
    let addr = traces::receive(board.traces.clone()).await?;
    let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), format!("http://{addr}"))];
    // A trace on the page a second after the call, not five; unless told otherwise.
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "1000".into()));
    }
    Ok(env)
}

/// Scrapes every sidecar of the mesh as last applied, one after another
/// (a dozen small GETs every two seconds), and hands the results to the board.
async fn scrape_forever(board: Board) {
    let client = scrape::AdminClient::new();
    let mut every = tokio::time::interval(SCRAPE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(config) = board.config() else { continue };
        let mut sidecars = HashMap::new();
        let mut ready = HashMap::new();
        for spec in config.sidecars() {
            let label = format!("{}-proxy", crate::launcher::workload_label(&spec));
            ready.insert(label.clone(), client.get(spec.admin, "/ready").await.is_some());
            if let Some(text) = client.get(spec.admin, "/metrics").await {
                sidecars.insert(label, scrape::parse(spec.name, &text));
            }
        }
        board.scraped(
            scrape::Snapshot {
                at: tokio::time::Instant::now(),
                sidecars,
            },
            ready,
        );
    }
}
