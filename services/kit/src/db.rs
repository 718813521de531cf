//! Opening a service's SQLite database: WAL mode, sane pragmas, and schema migrations
//! numbered by `PRAGMA user_version`, so a database from an older build is upgraded in
//! place and one from a newer build is refused rather than misread.
//!
//! All queries run on tokio-rusqlite's own thread, never on the async runtime.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokio_rusqlite::Connection;
pub use tokio_rusqlite::rusqlite;

/// Why a database could not be opened. Each message says its cause, which
/// is therefore not also its `source()` (a chain printed whole would say it
/// twice).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create directory {path}: {cause}")]
    CreateDir { path: PathBuf, cause: std::io::Error },
    #[error("cannot open database {path}: {cause}")]
    Open { path: PathBuf, cause: rusqlite::Error },
    #[error("cannot migrate database {path} to version {version}: {cause}")]
    Migrate {
        path: PathBuf,
        version: usize,
        cause: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than this build knows ({known}); refusing to touch it")]
    TooNew { path: PathBuf, found: usize, known: usize },
    #[error("database {path} was closed while being opened")]
    Closed { path: PathBuf },
}

/// The database thread has gone away (only after a close, so a bug or shutdown).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("database connection closed")]
pub struct Closed;

/// A service's database handle. Cheap to clone; every clone talks to the same
/// connection thread, which also serialises the writes.
#[derive(Clone, Debug)]
pub struct Db {
    conn: Connection,
}

/// Begins a write transaction that takes the write lock up front (`BEGIN
/// IMMEDIATE`), waiting for it within the busy timeout. A deferred transaction
/// that reads and then writes would instead be refused at once (`SQLITE_BUSY`)
/// when a replica sharing the file wrote meanwhile: SQLite cannot upgrade a
/// stale read snapshot, so waiting would not help it. Every write goes through this.
pub fn write(c: &mut rusqlite::Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

impl Db {
    /// Runs `f` on the database thread and returns its result.
    pub async fn call<F, R, E>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut rusqlite::Connection) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<Closed> + Send + 'static,
    {
        self.conn.call(f).await.map_err(|e| match e {
            tokio_rusqlite::Error::Error(e) => e,
            _ => E::from(Closed),
        })
    }
}

/// Opens (creating if needed) the database at `path` and brings its schema up to
/// `migrations.len()`: migration `i` (0-based) takes `user_version` from `i` to `i + 1`
/// inside one transaction. Never edit a released migration; append a new one.
pub async fn open(path: &Path, migrations: &'static [&'static str]) -> Result<Db, OpenError> {
    let owned = path.to_path_buf();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|cause| OpenError::CreateDir {
                path: dir.to_path_buf(),
                cause,
            })?;
    }
    let conn = Connection::open(path).await.map_err(|cause| OpenError::Open {
        path: owned.clone(),
        cause,
    })?;
    let for_err = owned.clone();
    conn.call(move |c| migrate(c, &owned, migrations))
        .await
        .map_err(|e| match e {
            tokio_rusqlite::Error::Error(e) => e,
            _ => OpenError::Closed { path: for_err },
        })?;
    Ok(Db { conn })
}

fn migrate(c: &mut rusqlite::Connection, path: &Path, migrations: &[&str]) -> Result<(), OpenError> {
    let open_err = |cause| OpenError::Open {
        path: path.to_path_buf(),
        cause,
    };
    c.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // WAL lets readers (and a curious operator's sqlite3 shell) run beside the writer;
    // NORMAL is durable across application crashes, which is what WAL needs.
    switch_to_wal(c).map_err(open_err)?;
    c.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
    c.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;

    // Replicas of a service share its database and may start at the same
    // moment: the IMMEDIATE transaction takes the write lock before reading the
    // version, so exactly one of them migrates and the others see it done.
    let migrate_err = |version, cause| OpenError::Migrate {
        path: path.to_path_buf(),
        version,
        cause,
    };
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(open_err)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err)?;
    let found = usize::try_from(found).unwrap_or(usize::MAX);
    if found > migrations.len() {
        return Err(OpenError::TooNew {
            path: path.to_path_buf(),
            found,
            known: migrations.len(),
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found) {
        let version = i + 1;
        tx.execute_batch(sql).map_err(|e| migrate_err(version, e))?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(|e| migrate_err(version, e))?;
        tracing::info!(db = %path.display(), version, "migrated database schema");
    }
    tx.commit().map_err(|e| migrate_err(migrations.len(), e))?;
    Ok(())
}

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets WAL mode, waiting out other connections doing the same. Switching
/// needs an exclusive lock, and when replicas open a new database together
/// SQLite answers `SQLITE_BUSY` at once rather than call the busy handler
/// (waiting could deadlock two connections that each hold a shared lock), so
/// the switch is retried here. This runs on the database's own thread, so
/// sleeping blocks no async task.
fn switch_to_wal(c: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    const PAUSE: Duration = Duration::from_millis(5);
    let give_up = Instant::now() + BUSY_TIMEOUT;
    loop {
        match c.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < give_up =>
            {
                std::thread::sleep(PAUSE);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &[&str] = &["CREATE TABLE t (x INTEGER);"];
    const V2: &[&str] = &["CREATE TABLE t (x INTEGER);", "ALTER TABLE t ADD COLUMN y TEXT;"];

    #[derive(Debug)]
    enum E {
        Sql,
        Closed,
    }
    impl From<Closed> for E {
        fn from(_: Closed) -> Self {
            E::Closed
        }
    }

    async fn version(db: &Db) -> i64 {
        db.call(|c| {
            c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .map_err(|_| E::Sql)
        })
        .await
        .expect("version")
    }

    #[tokio::test]
    async fn migrates_step_by_step_and_refuses_newer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dir/x.db");
        let db = open(&path, V1).await.expect("open v1");
        assert_eq!(version(&db).await, 1);
        let mode: String = db
            .call(|c| {
                c.pragma_query_value(None, "journal_mode", |r| r.get(0))
                    .map_err(|_| E::Sql)
            })
            .await
            .expect("mode");
        assert_eq!(mode, "wal");
        drop(db);

        let db = open(&path, V2).await.expect("open v2");
        assert_eq!(version(&db).await, 2);
        db.call(|c| {
            c.execute("INSERT INTO t (x, y) VALUES (1, 'a')", [])
                .map_err(|_| E::Sql)
        })
        .await
        .expect("new column exists");
        drop(db);

        let err = open(&path, V1).await.expect_err("newer schema refused");
        assert!(matches!(err, OpenError::TooNew { found: 2, known: 1, .. }), "{err}");
        let _ = E::Closed;
    }

    #[tokio::test]
    async fn replicas_opening_one_database_together_migrate_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shared.db");
        let (a, b, c, d) = tokio::join!(open(&path, V2), open(&path, V2), open(&path, V2), open(&path, V2));
        for db in [a, b, c, d] {
            assert_eq!(version(&db.expect("every replica opens it")).await, 2);
        }
    }
}
