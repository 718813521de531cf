//! The users table: accounts, password hashes, roles and preferences, in `users.db`.

use std::path::Path;

use meshwork_service_kit::db::{self, Db, rusqlite};
use rusqlite::{ErrorCode, OptionalExtension, Row, params};

use crate::Error;

const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    locale        TEXT NOT NULL,
    currency      TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;
",
    "
-- Roles beyond a shopper's (for example admin), space-separated; empty for shoppers.
ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT '';
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
    db: Db,
}

const COLUMNS: &str = "id, email, display_name, locale, currency, created_at_ms, roles";

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        email: r.get(1)?,
        display_name: r.get(2)?,
        locale: r.get(3)?,
        currency: r.get(4)?,
        created_at_ms: r.get(5)?,
        roles: r.get::<_, String>(6)?.split_whitespace().map(String::from).collect(),
    })
}

impl Store {
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Store {
            db: db::open(path, MIGRATIONS).await?,
        })
    }

    /// Inserts the account; the UNIQUE index decides a race between two registrations
    /// of one email, so exactly one of them wins.
    pub async fn insert(&self, user: NewUser) -> Result<UserRow, Error> {
        self.db
            .call(move |c| {
                let inserted = c.execute(
                    "INSERT INTO users (id, email, display_name, password_hash, locale, currency, created_at_ms, roles)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        user.id,
                        user.email,
                        user.display_name,
                        user.password_hash,
                        DEFAULT_LOCALE,
                        DEFAULT_CURRENCY,
                        user.created_at_ms,
                        user.roles.join(" ")
                    ],
                );
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
                    Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                        Err(Error::EmailTaken(user.email))
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }

    /// The user and password hash for a (normalised) email, if there is one.
    pub async fn by_email(&self, email: String) -> Result<Option<(UserRow, String)>, Error> {
        self.db
            .call(move |c| {
                let sql = format!("SELECT {COLUMNS}, password_hash FROM users WHERE email = ?1");
                Ok(c.query_row(&sql, [email], |r| Ok((user_row(r)?, r.get(7)?)))
                    .optional()?)
            })
            .await
    }

    pub async fn get(&self, id: String) -> Result<UserRow, Error> {
        self.db
            .call(move |c| {
                let sql = format!("SELECT {COLUMNS} FROM users WHERE id = ?1");
                c.query_row(&sql, [&id], user_row)
                    .optional()?
                    .ok_or(Error::NotFound(id))
            })
            .await
    }

    pub async fn set_preferences(&self, id: String, locale: String, currency: String) -> Result<UserRow, Error> {
        self.db
            .call(move |c| {
                let sql = format!("UPDATE users SET locale = ?2, currency = ?3 WHERE id = ?1 RETURNING {COLUMNS}");
                c.query_row(&sql, params![id, locale, currency], user_row)
                    .optional()?
                    .ok_or(Error::NotFound(id))
            })
            .await
    }
}
