//! Following the mesh while it runs: mesh.toml and every contract file it
//! names are polled (one `stat` each per interval) and, when one changed,
//! read and checked again; contracts that come from reflection are asked
//! of their apps (through `reflect`) until they answer. Each valid snapshot
//! is published on a `watch` channel; an invalid edit is logged with its
//! error and ignored, keeping the snapshot in force. Polling rather than
//! inotify: portable, and it sees files replaced by rename as editors and
//! `mesh up` write them.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use meshwork_config::{FileStamp, MeshConfig};
use tokio::{sync::watch, task::JoinSet};
use tonic::transport::Channel;

use crate::{mesh::Mesh, reflection, set::ContractSet};

/// How long to wait before asking an app's reflection again.
const REFLECTION_RETRY: Duration = Duration::from_secs(1);

/// Follows `updates`' current snapshot's files every `interval` until
/// `shutdown` resolves. `reflect` gives a channel to a mesh service's app
/// (for a sidecar, through its own outbound listener).
pub async fn follow(
    updates: watch::Sender<Arc<Mesh>>,
    interval: Duration,
    reflect: impl Fn(&str) -> Option<Channel>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reflecting = JoinSet::new();
    let mut asking: Vec<String> = Vec::new();
    // The versions of an edit that did not validate: not tried again.
    let mut refused: Vec<FileStamp> = Vec::new();
    loop {
        let current = updates.borrow().clone();
        for name in current.awaiting_reflection() {
            if asking.iter().any(|n| n == name) {
                continue;
            }
            let Some(channel) = reflect(name) else { continue };
            asking.push(name.to_string());
            reflecting.spawn(ask_until_answered(name.to_string(), channel));
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                if let Some(next) = reload_if_changed(&current, &mut refused).await {
                    updates.send_replace(Arc::new(next));
                }
            }
            Some(Ok((name, set))) = reflecting.join_next(), if !reflecting.is_empty() => {
                asking.retain(|n| *n != name);
                let current = updates.borrow().clone();
                match current.with_reflected(&name, set) {
                    Ok(next) => {
                        tracing::info!(service = %name, "contracts read from the app's reflection");
                        updates.send_replace(Arc::new(next));
                    }
                    Err(error) => tracing::error!(%error, "the contracts {name}'s reflection serves do not fit mesh.toml"),
                }
            }
        }
    }
}

/// Asks `name`'s reflection until it answers.
async fn ask_until_answered(name: String, channel: Channel) -> (String, ContractSet) {
    let origin = format!("the reflection of {name}");
    loop {
        match reflection::fetch(channel.clone(), &origin).await {
            Ok(set) => return (name, set),
            Err(error) => tracing::debug!(service = %name, %error, "reflection not answered yet"),
        }
        tokio::time::sleep(REFLECTION_RETRY).await;
    }
}

/// The snapshot read again if any of its files changed; `None` when none
/// did, or the edit does not validate (logged once; `refused` remembers it).
async fn reload_if_changed(current: &Arc<Mesh>, refused: &mut Vec<FileStamp>) -> Option<Mesh> {
    let files: Vec<(PathBuf, FileStamp)> = current.files().to_vec();
    let mut now = Vec::with_capacity(files.len());
    for (path, _) in &files {
        now.push(FileStamp::from_metadata(tokio::fs::metadata(path).await.ok().as_ref()));
    }
    // A file that vanished for a moment (an editor's rename) is not a change yet.
    let changed = files
        .iter()
        .zip(&now)
        .any(|((_, seen), now)| now.is_known() && now != seen);
    if !changed || now == *refused {
        return None;
    }
    let current = current.clone();
    let source = current.config.source.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        MeshConfig::load(&source).and_then(|config| current.reloaded(Arc::new(config)))
    })
    .await;
    match loaded {
        Ok(Ok(next)) => {
            refused.clear();
            tracing::info!(file = %next.config.source.display(), "mesh.toml or its contracts changed; applying them");
            Some(next)
        }
        Ok(Err(error)) => {
            *refused = now;
            tracing::warn!(%error, "ignoring the edit; keeping the configuration in force");
            None
        }
        Err(error) => {
            tracing::error!(%error, "reloading the configuration failed");
            None
        }
    }
}
