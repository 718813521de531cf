//! The users table: accounts, password hashes, roles and preferences, in `users.db` (SQLite)
//! or the service's PostgreSQL database; the same SQL for both.

use meshwork_service_kit::db::{self, Database, Db, sqlx};
use sqlx::{FromRow, Row, any::AnyRow};

use crate::{Error, NAME, key_store::KeyStore};

/// Never edit a released migration; append a new one. Integers that hold
/// milliseconds are BIGINT (PostgreSQL's INTEGER is 32 bits; to SQLite both are
/// INTEGER, as the STRICT table of older builds had it).
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    locale        TEXT NOT NULL,
    currency      TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
",
    "
-- Roles beyond a shopper's (for example admin), space-separated; empty for shoppers.
ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT '';
",
    "
-- OAuth 2.1 (see oauth.rs): public clients, and one-time codes stored as their SHA-256.
CREATE TABLE oauth_clients (
    client_id     TEXT PRIMARY KEY,
    client_name   TEXT NOT NULL,
    -- One per line.
    redirect_uris TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE oauth_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES oauth_clients (client_id),
    user_id        TEXT NOT NULL REFERENCES users (id),
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource       TEXT NOT NULL,
    scope          TEXT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    used           INTEGER NOT NULL DEFAULT 0
);
",
    "
-- The token signing keys (see key_store.rs): Ed25519 private keys, PKCS#8 PEM,
-- named by their creation time. In the database rather than in each replica's
-- data folder, so replicas on different machines sign with one key set.
CREATE TABLE signing_keys (
    created_at_ms BIGINT PRIMARY KEY,
    private_pem   TEXT NOT NULL
);
",
];

pub const DEFAULT_LOCALE: &str = "en-US";
pub const DEFAULT_CURRENCY: &str = "USD";

/// A user as stored, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub locale: String,
    pub currency: String,
    pub created_at_ms: i64,
    pub roles: Vec<String>,
}

/// What a new account is made of; the email is already normalised.
pub struct NewUser {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub created_at_ms: i64,
    pub roles: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
}

/// The columns of [`UserRow`], in its order, for every query that reads one.
macro_rules! columns {
    () => {
        "id, email, display_name, locale, currency, created_at_ms, roles"
    };
}

impl FromRow<'_, AnyRow> for UserRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(UserRow {
            id: r.try_get(0)?,
            email: r.try_get(1)?,
            display_name: r.try_get(2)?,
            locale: r.try_get(3)?,
            currency: r.try_get(4)?,
            created_at_ms: r.try_get(5)?,
            roles: r
                .try_get::<String, _>(6)?
                .split_whitespace()
                .map(String::from)
                .collect(),
        })
    }
}

impl Store {
    pub async fn open(database: &Database) -> anyhow::Result<Self> {
        Ok(Store {
            db: db::open(database, NAME, MIGRATIONS).await?,
        })
    }

    /// The signing keys, in the same database.
    pub fn keys(&self) -> KeyStore {
        KeyStore::new(self.db.clone())
    }

    /// Inserts the account; the UNIQUE index decides a race between two registrations
    /// of one email, so exactly one of them wins.
    pub async fn insert(&self, user: NewUser) -> Result<UserRow, Error> {
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, locale, currency, created_at_ms, roles)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.display_name)
        .bind(&user.password_hash)
        .bind(DEFAULT_LOCALE)
        .bind(DEFAULT_CURRENCY)
        .bind(user.created_at_ms)
        .bind(user.roles.join(" "))
        .execute(self.db.pool())
        .await;
        match inserted {
            Ok(_) => Ok(UserRow {
                id: user.id,
                email: user.email,
                display_name: user.display_name,
                locale: DEFAULT_LOCALE.into(),
                currency: DEFAULT_CURRENCY.into(),
                created_at_ms: user.created_at_ms,
                roles: user.roles,
            }),
            Err(e) if db::is_unique_violation(&e) => Err(Error::EmailTaken(user.email)),
            Err(e) => Err(e.into()),
        }
    }

    /// The user and password hash for a (normalised) email, if there is one.
    pub async fn by_email(&self, email: String) -> Result<Option<(UserRow, String)>, Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            ", password_hash FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(match row {
            Some(r) => Some((UserRow::from_row(&r)?, r.try_get(7)?)),
            None => None,
        })
    }

    pub async fn get(&self, id: String) -> Result<UserRow, Error> {
        sqlx::query_as(concat!("SELECT ", columns!(), " FROM users WHERE id = $1"))
            .bind(&id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or(Error::NotFound(id))
    }

    pub async fn set_preferences(&self, id: String, locale: String, currency: String) -> Result<UserRow, Error> {
        sqlx::query_as(concat!(
            "UPDATE users SET locale = $2, currency = $3 WHERE id = $1 RETURNING ",
            columns!()
        ))
        .bind(&id)
        .bind(locale)
        .bind(currency)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or(Error::NotFound(id))
    }
}
