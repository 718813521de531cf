//! The products table in `catalog.db`: seeding, paging, lookups and updates. Every
//! committed update is published to watchers from the database thread itself, so
//! they see changes in commit order.

use std::path::Path;

use meshwork_service_kit::{
    db::{self, Db, rusqlite},
    time::now_millis,
};
use rusqlite::{OptionalExtension, Row, params};
use tokio::sync::broadcast;

use crate::{Error, seed};

const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE products (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    category      TEXT NOT NULL,
    price_minor   INTEGER NOT NULL CHECK (price_minor >= 0),
    currency      TEXT NOT NULL,
    stock         INTEGER NOT NULL CHECK (stock >= 0),
    updated_at_ms INTEGER NOT NULL,
    -- Bumped on every change; watchers use it to drop states older than one sent.
    revision      INTEGER NOT NULL DEFAULT 1
) STRICT;
CREATE INDEX products_by_category ON products (category, id);
",
    "
-- A checkout's hold on stock, named by its idempotency key (see stock.rs).
CREATE TABLE reservations (
    id            TEXT PRIMARY KEY,
    status        TEXT NOT NULL CHECK (status IN ('HELD', 'CONFIRMED', 'RELEASED', 'RETURNED')),
    expires_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX held_reservations ON reservations (expires_at_ms) WHERE status = 'HELD';
CREATE TABLE reservation_items (
    reservation_id TEXT NOT NULL REFERENCES reservations (id),
    position       INTEGER NOT NULL,
    product_id     TEXT NOT NULL REFERENCES products (id),
    quantity       INTEGER NOT NULL CHECK (quantity >= 1),
    PRIMARY KEY (reservation_id, position)
) STRICT;
",
];

/// How many changes a watcher may fall behind before it is resynchronised from the
/// table. Small on purpose: a lagging watcher only ever needs the latest state.
const CHANGE_BUFFER: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price_minor: i64,
    pub currency: String,
    pub stock: i32,
    pub updated_at_ms: i64,
    pub revision: i64,
}

/// A price and/or stock to set.
#[derive(Debug, Clone)]
pub struct Update {
    pub price: Option<(i64, String)>,
    pub stock: Option<i32>,
}

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
    pub(crate) changes: broadcast::Sender<ProductRow>,
}

pub(crate) const COLUMNS: &str =
    "id, name, description, category, price_minor, currency, stock, updated_at_ms, revision";

pub(crate) fn product_row(r: &Row<'_>) -> rusqlite::Result<ProductRow> {
    Ok(ProductRow {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        category: r.get(3)?,
        price_minor: r.get(4)?,
        currency: r.get(5)?,
        stock: r.get(6)?,
        updated_at_ms: r.get(7)?,
        revision: r.get(8)?,
    })
}

pub(crate) fn get_one(c: &rusqlite::Connection, id: &str) -> Result<ProductRow, Error> {
    let mut stmt = c.prepare_cached(&format!("SELECT {COLUMNS} FROM products WHERE id = ?1"))?;
    stmt.query_row([id], product_row)
        .optional()?
        .ok_or_else(|| Error::UnknownProduct(id.to_owned()))
}

impl Store {
    /// Opens the database and seeds it if the products table is empty (first start).
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let db = db::open(path, MIGRATIONS).await?;
        let seeded = db.call(seed_if_empty).await?;
        if seeded > 0 {
            tracing::info!(products = seeded, "seeded the catalog");
        }
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Ok(Store { db, changes })
    }

    /// A receiver of every change committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ProductRow> {
        self.changes.subscribe()
    }

    /// Up to `limit` products after `after` (by id), optionally of one category.
    pub async fn list(&self, after: Option<String>, category: String, limit: usize) -> Result<Vec<ProductRow>, Error> {
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM products
                     WHERE id > ?1 AND (?2 = '' OR category = ?2)
                     ORDER BY id LIMIT ?3"
                ))?;
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let rows = stmt.query_map(params![after.unwrap_or_default(), category, limit], product_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// The products in the order asked; the first unknown id is the error.
    pub async fn get_many(&self, ids: Vec<String>) -> Result<Vec<ProductRow>, Error> {
        self.db
            .call(move |c| ids.iter().map(|id| get_one(c, id)).collect())
            .await
    }

    /// Applies `update` in one transaction and publishes the new state.
    pub async fn update(&self, id: String, update: Update) -> Result<ProductRow, Error> {
        let changes = self.changes.clone();
        self.db
            .call(move |c| {
                let tx = db::write(c)?;
                let before = get_one(&tx, &id)?;
                let (price, currency) = update.price.unwrap_or((before.price_minor, before.currency));
                let stock = update.stock.unwrap_or(before.stock);
                let row = tx.query_row(
                    &format!(
                        "UPDATE products SET price_minor = ?2, currency = ?3, stock = ?4, updated_at_ms = ?5,
                         revision = revision + 1 WHERE id = ?1 RETURNING {COLUMNS}"
                    ),
                    params![id, price, currency, stock, now_millis()],
                    product_row,
                )?;
                tx.commit()?;
                // No receivers is not an error: nobody is watching.
                let _ = changes.send(row.clone());
                Ok(row)
            })
            .await
    }
}

fn seed_if_empty(c: &mut rusqlite::Connection) -> Result<usize, Error> {
    // IMMEDIATE: replicas starting together must not both find the table empty.
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let count: i64 = tx.query_row("SELECT COUNT(*) FROM products", [], |r| r.get(0))?;
    if count > 0 {
        return Ok(0);
    }
    let now = now_millis();
    {
        let mut insert = tx.prepare(
            "INSERT INTO products (id, name, description, category, price_minor, currency, stock, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'USD', ?6, ?7)",
        )?;
        for (id, name, description, category, price, stock) in seed::PRODUCTS {
            insert.execute(params![id, name, description, category, price, stock, now])?;
        }
    }
    tx.commit()?;
    Ok(seed::PRODUCTS.len())
}
