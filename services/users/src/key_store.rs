//! The token signing keys in the users database (table `signing_keys`): one
//! Ed25519 private key per row, dated by its creation time, which orders
//! them (the newest signs). Every replica of the service reads the same rows,
//! so a token one replica signs verifies with the key set any other
//! publishes, on one machine or many (PostgreSQL).
//!
//! Keys of the versions that kept them as files are imported on the first
//! start after the upgrade (see [`key_files`](crate::key_files)), so the
//! tokens they signed keep verifying.

use std::path::Path;

use meshwork_service_kit::db::{Db, sqlx};
use sqlx::Row;

use crate::{Error, key_files};

/// One private key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Unix milliseconds.
    pub created_ms: i64,
    pub pem: String,
}

/// Attempts at a free creation time before giving up: another replica may
/// store a key in the same millisecond.
const CREATE_ATTEMPTS: i64 = 16;

#[derive(Debug, Clone)]
pub struct KeyStore {
    db: Db,
}

impl KeyStore {
    pub fn new(db: Db) -> Self {
        KeyStore { db }
    }

    /// Every key, oldest first, after importing the key files of an earlier
    /// version or creating the first key when there is none.
    pub async fn load_or_create(&self, data_dir: &Path, now_ms: i64) -> Result<Vec<StoredKey>, Error> {
        let keys = self.list().await?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        let dir = data_dir.to_path_buf();
        let legacy = tokio::task::spawn_blocking(move || key_files::legacy_keys(&dir))
            .await
            .map_err(|e| Error::Key(e.to_string()))??;
        if legacy.is_empty() {
            self.create(now_ms).await?;
        } else {
            tracing::info!(keys = legacy.len(), "importing the signing keys of an earlier version");
            for key in &legacy {
                self.insert(key).await?;
            }
        }
        // Another replica may have stored one at the same moment; the table decides.
        self.list().await
    }

    /// The keys, oldest first.
    pub async fn list(&self) -> Result<Vec<StoredKey>, Error> {
        let rows = sqlx::query("SELECT created_at_ms, private_pem FROM signing_keys ORDER BY created_at_ms")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredKey {
                    created_ms: row.try_get(0)?,
                    pem: row.try_get(1)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    /// Generates a new key dated `now_ms` (or the next free millisecond) and stores it.
    pub async fn create(&self, now_ms: i64) -> Result<StoredKey, Error> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| Error::Key(e.to_string()))?;
        let mut key = StoredKey {
            created_ms: now_ms,
            pem: pair.serialize_pem(),
        };
        for _ in 0..CREATE_ATTEMPTS {
            if self.insert(&key).await? {
                tracing::info!(created_ms = key.created_ms, "created a token signing key");
                return Ok(key);
            }
            key.created_ms += 1;
        }
        Err(Error::Key(format!(
            "no free creation time for a signing key from {now_ms} ms on"
        )))
    }

    /// Deletes the key dated `created_ms` (one that no token can still need).
    pub async fn remove(&self, created_ms: i64) -> Result<(), Error> {
        sqlx::query("DELETE FROM signing_keys WHERE created_at_ms = $1")
            .bind(created_ms)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Stores `key` unless a key of that date exists; whether it was stored.
    async fn insert(&self, key: &StoredKey) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO signing_keys (created_at_ms, private_pem) VALUES ($1, $2)
             ON CONFLICT (created_at_ms) DO NOTHING",
        )
        .bind(key.created_ms)
        .bind(&key.pem)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
