//! Following mesh.toml while the sidecar runs: the file is polled (its
//! modification time and length) and, when it changed, read and validated
//! again. A valid file is published on a `watch` channel (outbound
//! discovery and policy follow it); an invalid one is logged with its error
//! and ignored, keeping the configuration in force. Polling rather than
//! inotify: portable, one `stat` a second, and it sees files replaced by
//! rename as editors and `mesh up` write them.

use std::{path::Path, sync::Arc, time::Duration};

use meshwork_config::{FileStamp, MeshConfig};
use tokio::sync::watch;

use crate::shutdown::Shutdown;

async fn stamp(path: &Path) -> FileStamp {
    FileStamp::from_metadata(tokio::fs::metadata(path).await.ok().as_ref())
}

/// Polls the file `config` was read from every `interval` until shutdown,
/// publishing each new valid configuration on `updates`. Changes count from
/// the version `config` was read from (or, for one parsed from text, from
/// the file as it is at start).
pub async fn poll(
    config: Arc<MeshConfig>,
    interval: Duration,
    updates: watch::Sender<Arc<MeshConfig>>,
    mut shutdown: Shutdown,
) {
    let path = config.source.clone();
    let mut seen = match config.source_stamp {
        stamp if stamp.is_known() => stamp,
        _ => stamp(&path).await,
    };
    if !seen.is_known() {
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
        if !now.is_known() || now == seen {
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
