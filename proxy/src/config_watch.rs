//! Following mesh.toml while the sidecar runs: the file is polled (its
//! modification time and length) and, when it changed, read and validated
//! again. A valid file is published on a `watch` channel (outbound
//! discovery and policy follow it); an invalid one is logged with its error
//! and ignored, keeping the configuration in force. Polling rather than
//! inotify: portable, one `stat` a second, and it sees files replaced by
//! rename as editors and `mesh up` write them.

use std::{path::PathBuf, sync::Arc, time::Duration, time::SystemTime};

use meshwork_config::MeshConfig;
use tokio::sync::watch;

use crate::shutdown::Shutdown;

/// What identifies a version of the file without reading it.
type Stamp = (SystemTime, u64);

async fn stamp(path: &PathBuf) -> Option<Stamp> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Polls `path` every `interval` until shutdown, publishing each new valid
/// configuration on `updates`. The first stamp is taken at once, so only
/// changes after start count.
pub async fn poll(path: PathBuf, interval: Duration, updates: watch::Sender<Arc<MeshConfig>>, mut shutdown: Shutdown) {
    let mut seen = stamp(&path).await;
    if seen.is_none() {
        tracing::debug!(file = %path.display(), "mesh.toml not found; changes will be picked up if it appears");
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => return,
        }
        let now = stamp(&path).await;
        if now.is_none() || now == seen {
            continue;
        }
        seen = now;
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "cannot read mesh.toml; keeping the configuration in force");
                continue;
            }
        };
        match MeshConfig::parse(&text, &path) {
            Ok(config) => {
                tracing::info!(file = %path.display(), "mesh.toml changed; applying it");
                updates.send_replace(Arc::new(config));
            }
            Err(error) => {
                tracing::warn!(%error, "ignoring invalid mesh.toml; keeping the configuration in force");
            }
        }
    }
}
