//! A service's database: SQLite (a file in the data dir, the embedded default that
//! needs nothing installed) or PostgreSQL (a URL, for replicas on several machines),
//! both through sqlx's `Any` driver so each service writes its queries once.
//!
//! Opening one brings its schema up to date with the service's ordered list of
//! migrations, the same SQL for both: a database from an older build is upgraded in
//! place and one from a newer build is refused rather than misread. Replicas share
//! one database, so every write runs in a transaction from [`Db::write`]: `BEGIN
//! IMMEDIATE` on SQLite (writers queue for the file's lock instead of failing with
//! "database is locked"), and on PostgreSQL a READ COMMITTED transaction whose rows
//! the services lock in a fixed order (`SELECT ... FOR UPDATE`, or by writing first).

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

pub use sqlx;
use sqlx::{
    Any, AnyConnection, ConnectOptions, Connection, Executor, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
    pool::PoolOptions,
};

/// A write transaction: commit it, or drop it to roll back.
pub type Tx = Transaction<'static, Any>;
/// What queries run on inside a transaction (`&mut *tx`) or a pooled connection.
pub type Conn = AnyConnection;

/// The environment variable an app reads its database URL from (`mesh up` sets it
/// from mesh.toml's `database` key; a Kubernetes pod from a Secret).
pub const DATABASE_URL_ENV: &str = "MESH_DATABASE_URL";

/// Where a service keeps its data.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created if missing; replicas on one machine share it.
    Sqlite(PathBuf),
    /// A PostgreSQL database; replicas anywhere share it. The URL is checked.
    Postgres(String),
}

/// The SQL dialect of a [`Database`], for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One statement in both dialects, side by side where they differ (PostgreSQL
/// needs `FOR UPDATE` where SQLite's write lock already covers the whole file).
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// A database URL that cannot be used; says why without repeating the URL,
/// which may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

impl Database {
    /// `<data_dir>/<name>.db`, the default.
    pub fn sqlite_in(data_dir: &std::path::Path, name: &str) -> Self {
        Database::Sqlite(crate::db_path(data_dir, name))
    }

    /// A PostgreSQL URL (`postgres://user:password@host:5432/name?sslmode=require`),
    /// checked as the driver will read it.
    pub fn postgres(url: &str) -> Result<Self, UrlError> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("postgres" | "postgresql")) {
            return Err(UrlError(format!(
                "'{}' is not a PostgreSQL URL: write postgres://user:password@host:5432/database, \
                 or leave it out to keep SQLite in the data folder",
                scheme.map_or("the value", |s| s)
            )));
        }
        sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| {
            UrlError(format!(
                "not a usable PostgreSQL URL: {}",
                without_url(&e.to_string(), url)
            ))
        })?;
        Ok(Database::Postgres(url.to_owned()))
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Database::Sqlite(_) => Dialect::Sqlite,
            Database::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// Keeps a driver's message from quoting the URL (and so its password).
fn without_url(message: &str, url: &str) -> String {
    message.replace(url, "<url>")
}

/// The path, or the URL with its password hidden: what logs and errors show.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

/// `scheme://user:***@host...`: the URL without its password.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Why a database could not be opened. Each message says its cause, which
/// is therefore not also its `source()` (a chain printed whole would say it
/// twice).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create directory {path}: {cause}")]
    CreateDir { path: PathBuf, cause: std::io::Error },
    #[error("cannot open database {db}: {cause}")]
    Open { db: Database, cause: sqlx::Error },
    #[error("cannot open database {db}: no answer within {after:?}")]
    NoAnswer { db: Database, after: Duration },
    #[error("cannot migrate database {db} to version {version}: {cause}")]
    Migrate {
        db: Database,
        version: usize,
        cause: sqlx::Error,
    },
    #[error(
        "database {db} has schema version {found} for {service}, newer than this build knows ({known}); refusing to touch it"
    )]
    TooNew {
        db: Database,
        service: String,
        found: usize,
        known: usize,
    },
}

/// A service's database handle: a pool of connections. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: sqlx::AnyPool,
    dialect: Dialect,
}

impl Db {
    /// For reads outside a transaction: `query.fetch_one(db.pool())`.
    pub fn pool(&self) -> &sqlx::AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// This database's variant of `sql`.
    pub fn sql(&self, sql: &Sql) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => sql.sqlite,
            Dialect::Postgres => sql.postgres,
        }
    }

    /// Begins a write transaction. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), waiting for it within the busy timeout: a deferred
    /// transaction that reads and then writes would instead be refused at once
    /// (`SQLITE_BUSY`) when a replica sharing the file wrote meanwhile, since SQLite
    /// cannot upgrade a stale read snapshot. On PostgreSQL it is a plain READ
    /// COMMITTED transaction; the statements lock the rows they decide on.
    pub async fn write(&self) -> Result<Tx, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
    }
}

/// Whether `e` is the database refusing a duplicate of a UNIQUE key.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|e| e.is_unique_violation())
}

/// How long a SQLite statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Set on every SQLite connection: `busy_timeout` is [`BUSY_TIMEOUT`];
/// synchronous NORMAL is durable across application crashes, which is what WAL needs.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;";
/// How long opening waits for the database to answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per process. SQLite has one writer at a time anyway, and a
/// short queue in the pool is fairer than many connections sleeping in
/// SQLite's busy handler; WAL readers never wait for the writer.
const SQLITE_CONNECTIONS: u32 = 4;
const POSTGRES_CONNECTIONS: u32 = 8;
/// One advisory lock for every service's migrations on a PostgreSQL server, so
/// replicas starting together migrate one at a time ("mesh" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d65_7368;

/// Opens (creating if needed) the database and brings `service`'s schema up to
/// `migrations.len()`: migration `i` (0-based) takes the version from `i` to
/// `i + 1`, all pending ones inside one transaction. Never edit a released
/// migration; append a new one. The SQL must suit both dialects.
///
/// SQLite keeps the version in `PRAGMA user_version` (one file per service, as
/// older builds did); PostgreSQL in a `meshwork_schema` row per service, so
/// several services may share one database.
pub async fn open(database: &Database, service: &str, migrations: &'static [&'static str]) -> Result<Db, OpenError> {
    let open_err = |cause| OpenError::Open {
        db: database.clone(),
        cause,
    };
    let (options, pool_options) = match database {
        Database::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|cause| OpenError::CreateDir {
                        path: dir.to_path_buf(),
                        cause,
                    })?;
            }
            // The Any driver takes a URL; sqlx writes the file's (escaped) one.
            let url = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .to_url_lossy();
            let pool = PoolOptions::<Any>::new()
                .max_connections(SQLITE_CONNECTIONS)
                .after_connect(|c, _| {
                    Box::pin(async move {
                        c.execute(SQLITE_PRAGMAS).await?;
                        Ok(())
                    })
                });
            (AnyConnectOptions::from_url(&url).map_err(open_err)?, pool)
        }
        Database::Postgres(url) => (
            AnyConnectOptions::from_str(url).map_err(open_err)?,
            AnyPoolOptions::new().max_connections(POSTGRES_CONNECTIONS),
        ),
    };
    sqlx::any::install_default_drivers();
    // One connection of its own first: a database that cannot be reached is
    // refused at start with the driver's reason (a pool would only say it timed
    // out), and the schema is brought up to date before any request comes.
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect_with(&options))
        .await
        .map_err(|_| OpenError::NoAnswer {
            db: database.clone(),
            after: CONNECT_TIMEOUT,
        })?
        .map_err(open_err)?;
    if database.dialect() == Dialect::Sqlite {
        conn.execute(SQLITE_PRAGMAS).await.map_err(open_err)?;
        switch_to_wal(&mut conn).await.map_err(open_err)?;
    }
    migrate(&mut conn, database, service, migrations).await?;
    // Only a courtesy to the server: the connection is dropped either way.
    let _ = conn.close().await;
    Ok(Db {
        pool: pool_options.connect_lazy_with(options),
        dialect: database.dialect(),
    })
}

async fn migrate(conn: &mut Conn, database: &Database, service: &str, migrations: &[&str]) -> Result<(), OpenError> {
    let open_err = |cause| OpenError::Open {
        db: database.clone(),
        cause,
    };
    let migrate_err = |version, cause| OpenError::Migrate {
        db: database.clone(),
        version,
        cause,
    };
    // Replicas of a service share its database and may start at the same
    // moment: the lock is taken before the version is read, so exactly one of
    // them migrates and the others see it done.
    let mut tx = match database.dialect() {
        Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await.map_err(open_err)?,
        Dialect::Postgres => {
            let mut tx = conn.begin().await.map_err(open_err)?;
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(open_err)?;
            tx.execute(
                "CREATE TABLE IF NOT EXISTS meshwork_schema (service TEXT PRIMARY KEY, version BIGINT NOT NULL)",
            )
            .await
            .map_err(open_err)?;
            tx
        }
    };
    let found: i64 = match database.dialect() {
        Dialect::Sqlite => sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await,
        Dialect::Postgres => sqlx::query_scalar("SELECT version FROM meshwork_schema WHERE service = $1")
            .bind(service)
            .fetch_optional(&mut *tx)
            .await
            .map(Option::unwrap_or_default),
    }
    .map_err(open_err)?;
    let found = usize::try_from(found).unwrap_or(usize::MAX);
    if found > migrations.len() {
        return Err(OpenError::TooNew {
            db: database.clone(),
            service: service.to_owned(),
            found,
            known: migrations.len(),
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found) {
        let version = i + 1;
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| migrate_err(version, e))?;
        let recorded = match database.dialect() {
            // PRAGMA takes no parameters; the version is a number we made.
            Dialect::Sqlite => tx.execute(format!("PRAGMA user_version = {version}").as_str()).await,
            Dialect::Postgres => {
                sqlx::query(
                    "INSERT INTO meshwork_schema (service, version) VALUES ($1, $2)
                     ON CONFLICT (service) DO UPDATE SET version = excluded.version",
                )
                .bind(service)
                .bind(version as i64)
                .execute(&mut *tx)
                .await
            }
        };
        recorded.map_err(|e| migrate_err(version, e))?;
        tracing::info!(db = %database, service, version, "migrated database schema");
    }
    tx.commit().await.map_err(|e| migrate_err(migrations.len(), e))?;
    Ok(())
}

/// Sets WAL mode, which lets readers (and a curious operator's sqlite3 shell)
/// run beside the writer, waiting out other connections doing the same.
/// Switching needs an exclusive lock, and when replicas open a new database
/// together SQLite answers `SQLITE_BUSY` at once rather than call the busy
/// handler (waiting could deadlock two connections that each hold a shared
/// lock), so the switch is retried here.
async fn switch_to_wal(conn: &mut Conn) -> Result<(), sqlx::Error> {
    const PAUSE: Duration = Duration::from_millis(5);
    const SQLITE_BUSY: i64 = 5;
    let give_up = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.execute("PRAGMA journal_mode = WAL").await {
            Err(sqlx::Error::Database(e))
                if e.code()
                    .and_then(|c| c.parse::<i64>().ok())
                    .is_some_and(|c| c & 0xff == SQLITE_BUSY)
                    && tokio::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(PAUSE).await;
            }
            other => return other.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &[&str] = &["CREATE TABLE t (x INTEGER);"];
    const V2: &[&str] = &["CREATE TABLE t (x INTEGER);", "ALTER TABLE t ADD COLUMN y TEXT;"];

    async fn version(db: &Db) -> i64 {
        sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(db.pool())
            .await
            .expect("version")
    }

    #[tokio::test]
    async fn migrates_step_by_step_and_refuses_newer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = Database::Sqlite(dir.path().join("nested/dir/x.db"));
        let db = open(&database, "x", V1).await.expect("open v1");
        assert_eq!(version(&db).await, 1);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(db.pool())
            .await
            .expect("mode");
        assert_eq!(mode, "wal");
        db.pool().close().await;

        let db = open(&database, "x", V2).await.expect("open v2");
        assert_eq!(version(&db).await, 2);
        sqlx::query("INSERT INTO t (x, y) VALUES ($1, $2)")
            .bind(1_i64)
            .bind("a")
            .execute(db.pool())
            .await
            .expect("new column exists");
        db.pool().close().await;

        let err = open(&database, "x", V1).await.expect_err("newer schema refused");
        assert!(matches!(err, OpenError::TooNew { found: 2, known: 1, .. }), "{err}");
    }

    #[tokio::test]
    async fn replicas_opening_one_database_together_migrate_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = Database::Sqlite(dir.path().join("shared.db"));
        let (a, b, c, d) = tokio::join!(
            open(&database, "x", V2),
            open(&database, "x", V2),
            open(&database, "x", V2),
            open(&database, "x", V2)
        );
        for db in [a, b, c, d] {
            assert_eq!(version(&db.expect("every replica opens it")).await, 2);
        }
    }

    #[tokio::test]
    async fn an_unreachable_postgres_is_refused_at_once_with_the_reason() {
        let database = Database::postgres("postgres://shop:s3cret@127.0.0.1:1/shop").expect("valid");
        let err = open(&database, "x", V1).await.expect_err("nothing listens on port 1");
        let text = err.to_string();
        assert!(
            text.starts_with("cannot open database postgres://shop:***@127.0.0.1:1/shop: "),
            "{text}"
        );
        assert!(text.contains("refused"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn postgres_urls_are_checked_and_printed_without_their_password() {
        let db = Database::postgres("postgres://shop:s3cret@db.example:5432/catalog?sslmode=require").expect("valid");
        assert_eq!(
            db.to_string(),
            "postgres://shop:***@db.example:5432/catalog?sslmode=require"
        );
        assert!(!format!("{db:?}").contains("s3cret"));
        let err = Database::postgres("mysql://u:p@h/db").expect_err("not postgres");
        assert!(err.to_string().starts_with("'mysql' is not a PostgreSQL URL"), "{err}");
        let err = Database::postgres("postgres://u:s3cret@h:notaport/db").expect_err("bad port");
        assert!(err.to_string().starts_with("not a usable PostgreSQL URL"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
