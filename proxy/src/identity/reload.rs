//! The sidecar's own certificate and key, swapped in place when the files
//! change. Handshakes read the current pair through `ArcSwap`, so a reload
//! never blocks or drops an open connection: established connections keep the
//! keys they were made with, new ones get the new pair.
//!
//! Files are polled (every ~2 s) rather than watched with inotify because the
//! common ways certificates get replaced defeat watches: Kubernetes secret
//! volumes swap a `..data` symlink, editors and `mv` replace the inode, and
//! network file systems send no events. Polling metadata is cheap and sees all
//! of them. A new pair that does not load (half-written, mismatched, another
//! identity) is logged and the old pair kept.

use std::{
    fs::Metadata,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::{
    SignatureScheme,
    client::ResolvesClientCert,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::{IdentityError, load};
use crate::shutdown::Shutdown;

/// What we compare to notice a changed file: replacing by rename changes the
/// inode, rewriting in place changes mtime or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        // `metadata` follows symlinks, so a swapped symlink shows as a change.
        std::fs::metadata(path).ok().map(|m: Metadata| Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            inode: m.ino(),
        })
    }
}

pub struct ReloadingKey {
    current: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
    expected_id: String,
    provider: Arc<CryptoProvider>,
    stamps: Mutex<(Option<Stamp>, Option<Stamp>)>,
}

impl std::fmt::Debug for ReloadingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingKey")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingKey {
    pub fn load(
        cert: &Path,
        key: &Path,
        expected_id: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingKey, IdentityError> {
        let stamps = (Stamp::of(cert), Stamp::of(key));
        let pair = load_checked(cert, key, expected_id, &provider)?;
        Ok(ReloadingKey {
            current: ArcSwap::new(pair),
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            expected_id: expected_id.to_string(),
            provider,
            stamps: Mutex::new(stamps),
        })
    }

    /// The pair new handshakes use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Reloads the pair if either file changed since the last look; returns
    /// whether a new pair is now in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = (Stamp::of(&self.cert_path), Stamp::of(&self.key_path));
        {
            let mut seen = self.stamps.lock();
            if *seen == now {
                return false;
            }
            // Remember what we tried, so a bad file is reported once, not
            // every poll; its next change is tried again.
            *seen = now;
        }
        match load_checked(&self.cert_path, &self.key_path, &self.expected_id, &self.provider) {
            Ok(pair) => {
                self.current.store(pair);
                tracing::info!(cert = %self.cert_path.display(), "loaded a new certificate");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "certificate files changed but cannot be used; keeping the current certificate");
                false
            }
        }
    }

    /// Polls the files every `interval` until shutdown.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.requested() => return,
            }
            // Reading two small files; not worth a blocking-pool hop.
            self.reload_if_changed();
        }
    }
}

/// Loads a pair and checks it carries our own SPIFFE ID: a file replaced by
/// another workload's certificate must not change who we are.
fn load_checked(
    cert: &Path,
    key: &Path,
    expected_id: &str,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, IdentityError> {
    let pair = load::certified_key(cert, key, provider)?;
    let found = pair
        .cert
        .first()
        .and_then(|der| meshwork_certs::spiffe_id_of(der))
        .unwrap_or_else(|| "without a SPIFFE ID".to_string());
    if found != expected_id {
        return Err(IdentityError::WrongIdentity {
            path: cert.to_path_buf(),
            found,
            expected: expected_id.to_string(),
        });
    }
    Ok(pair)
}

impl ResolvesServerCert for ReloadingKey {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingKey {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
