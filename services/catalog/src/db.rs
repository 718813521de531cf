//! Every query of the catalog, for `catalog.db` (SQLite) or the service's PostgreSQL
//! database, the same SQL for both except where PostgreSQL must lock a row that
//! SQLite's write transaction already covers: products (seeding, paging, lookups,
//! updates) and the stock reservations of checkouts (their saga is in stock.rs).
//!
//! Lock order, so that transactions on PostgreSQL never deadlock: a reservation's
//! row first, then its products in id order.

use meshwork_service_kit::{
    db::{self, Conn, Database, Db, Sql, sqlx},
    time::now_millis,
};
use sqlx::{FromRow, Row, any::AnyRow};
use tokio::sync::broadcast;

use crate::{
    Error, NAME, seed,
    stock::{Items, Reservation, Status},
};

/// Never edit a released migration; append a new one. The first two were
/// written for SQLite alone (STRICT); they read the same to both now, with
/// BIGINT where PostgreSQL's 32-bit INTEGER would not hold the values.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE products (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    category      TEXT NOT NULL,
    price_minor   BIGINT NOT NULL CHECK (price_minor >= 0),
    currency      TEXT NOT NULL,
    stock         INTEGER NOT NULL CHECK (stock >= 0),
    updated_at_ms BIGINT NOT NULL,
    -- Bumped on every change; watchers use it to drop states older than one sent.
    revision      BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX products_by_category ON products (category, id);
",
    "
-- A checkout's hold on stock, named by its idempotency key (see stock.rs).
CREATE TABLE reservations (
    id            TEXT PRIMARY KEY,
    status        TEXT NOT NULL CHECK (status IN ('HELD', 'CONFIRMED', 'RELEASED', 'RETURNED')),
    expires_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX held_reservations ON reservations (expires_at_ms) WHERE status = 'HELD';
CREATE TABLE reservation_items (
    reservation_id TEXT NOT NULL REFERENCES reservations (id),
    position       INTEGER NOT NULL,
    product_id     TEXT NOT NULL REFERENCES products (id),
    quantity       INTEGER NOT NULL CHECK (quantity >= 1),
    PRIMARY KEY (reservation_id, position)
);
",
    "
-- What one US dollar buys of each currency, in millionths of its major unit, and how
-- many decimals its minor unit has (ISO 4217). Prices are shown and charged in the
-- shopper's currency with these (see prices.rs); an operator keeps them current (for
-- example from a daily feed), and every replica reads them again each minute.
CREATE TABLE exchange_rates (
    currency       TEXT PRIMARY KEY,
    per_usd_micros BIGINT NOT NULL CHECK (per_usd_micros > 0),
    exponent       INTEGER NOT NULL CHECK (exponent BETWEEN 0 AND 4)
);
INSERT INTO exchange_rates (currency, per_usd_micros, exponent) VALUES
    ('USD', 1000000, 2), ('EUR', 920000, 2), ('GBP', 790000, 2), ('CHF', 880000, 2),
    ('JPY', 150000000, 0), ('CAD', 1360000, 2), ('SEK', 10500000, 2);
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

/// The columns of [`ProductRow`], in its order, for every query that reads one.
macro_rules! columns {
    () => {
        "id, name, description, category, price_minor, currency, stock, updated_at_ms, revision"
    };
}

impl FromRow<'_, AnyRow> for ProductRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ProductRow {
            id: r.try_get(0)?,
            name: r.try_get(1)?,
            description: r.try_get(2)?,
            category: r.try_get(3)?,
            price_minor: r.try_get(4)?,
            currency: r.try_get(5)?,
            stock: r.try_get(6)?,
            updated_at_ms: r.try_get(7)?,
            revision: r.try_get(8)?,
        })
    }
}

/// Every exchange rate: (currency, per-USD millionths, minor-unit decimals).
pub(crate) async fn exchange_rates(db: &Db) -> Result<Vec<(String, i64, i32)>, sqlx::Error> {
    sqlx::query_as("SELECT currency, per_usd_micros, exponent FROM exchange_rates")
        .fetch_all(db.pool())
        .await
}

pub(crate) async fn get_one(c: &mut Conn, id: &str) -> Result<ProductRow, Error> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM products WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| Error::UnknownProduct(id.to_owned()))
}

impl Store {
    /// Opens the database and seeds it if the products table is empty (first start).
    pub async fn open(database: &Database) -> anyhow::Result<Self> {
        let db = db::open(database, NAME, MIGRATIONS).await?;
        let seeded = seed_if_empty(&db).await?;
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

    /// Tells watchers about committed changes. Transactions of several tasks may
    /// commit in one order and publish in another; the revisions let watchers
    /// drop a state older than one they have.
    pub(crate) fn publish(&self, changed: Vec<ProductRow>) {
        for row in changed {
            // No receivers is not an error: nobody is watching.
            let _ = self.changes.send(row);
        }
    }

    /// Up to `limit` products after `after` (by id), optionally of one category.
    pub async fn list(&self, after: Option<String>, category: String, limit: usize) -> Result<Vec<ProductRow>, Error> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM products WHERE id > $1 AND ($2 = '' OR category = $2) ORDER BY id LIMIT $3"
        ))
        .bind(after.unwrap_or_default())
        .bind(category)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?)
    }

    /// The products in the order asked; the first unknown id is the error.
    pub async fn get_many(&self, ids: Vec<String>) -> Result<Vec<ProductRow>, Error> {
        let mut c = self.db.pool().acquire().await?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in &ids {
            rows.push(get_one(&mut c, id).await?);
        }
        Ok(rows)
    }

    /// Applies `update` in one statement (so two updates of different fields
    /// never undo each other) and publishes the new state.
    pub async fn update(&self, id: String, update: Update) -> Result<ProductRow, Error> {
        let (price, currency) = update.price.unzip();
        let row: ProductRow = sqlx::query_as(concat!(
            "UPDATE products SET price_minor = COALESCE($2, price_minor), currency = COALESCE($3, currency),
             stock = COALESCE($4, stock), updated_at_ms = $5, revision = revision + 1 WHERE id = $1 RETURNING ",
            columns!()
        ))
        .bind(&id)
        .bind(price)
        .bind(currency)
        .bind(update.stock)
        .bind(now_millis())
        .fetch_optional(self.db.pool())
        .await?
        .ok_or(Error::UnknownProduct(id))?;
        self.publish(vec![row.clone()]);
        Ok(row)
    }
}

/// Seeds the products on first start. Replicas starting together may both find
/// the table empty: the inserts skip what another one inserted meanwhile.
async fn seed_if_empty(db: &Db) -> Result<usize, Error> {
    let mut tx = db.write().await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(&mut *tx)
        .await?;
    if count > 0 {
        return Ok(0);
    }
    let now = now_millis();
    let mut seeded = 0;
    for (id, name, description, category, price, stock) in seed::PRODUCTS {
        seeded += sqlx::query(
            "INSERT INTO products (id, name, description, category, price_minor, currency, stock, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, 'USD', $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(*id)
        .bind(*name)
        .bind(*description)
        .bind(*category)
        .bind(*price)
        .bind(*stock)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(usize::try_from(seeded).unwrap_or(usize::MAX))
}

/// Reads a reservation and locks its row until the transaction ends.
const LOCK_RESERVATION: Sql = Sql {
    sqlite: "SELECT status, expires_at_ms FROM reservations WHERE id = $1",
    postgres: "SELECT status, expires_at_ms FROM reservations WHERE id = $1 FOR UPDATE",
};

/// The reservation named `id`, its row locked; `None` if there is none.
pub(crate) async fn lock_reservation(db: &Db, c: &mut Conn, id: &str) -> Result<Option<Reservation>, sqlx::Error> {
    let Some((status, expires_at_ms)) = sqlx::query_as::<_, (String, i64)>(db.sql(&LOCK_RESERVATION))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
    else {
        return Ok(None);
    };
    let items: Items = sqlx::query_as(
        "SELECT product_id, quantity FROM reservation_items WHERE reservation_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await?;
    Ok(Some(Reservation {
        id: id.to_owned(),
        status: Status::from_sql(&status),
        items,
        expires_at_ms,
    }))
}

/// Makes a HELD reservation without items; `false` if one of that id exists. On
/// PostgreSQL a concurrent insert of the same id waits for the first to commit
/// (or roll back) and then finds it, so one id is only ever reserved once.
pub(crate) async fn insert_reservation(c: &mut Conn, id: &str, expires_at_ms: i64) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO reservations (id, status, expires_at_ms, updated_at_ms) VALUES ($1, 'HELD', $2, $3)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(expires_at_ms)
    .bind(now_millis())
    .execute(&mut *c)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub(crate) async fn insert_reservation_items(c: &mut Conn, id: &str, items: &Items) -> Result<(), sqlx::Error> {
    for (position, (product, quantity)) in items.iter().enumerate() {
        sqlx::query(
            "INSERT INTO reservation_items (reservation_id, position, product_id, quantity) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(position as i64)
        .bind(product)
        .bind(*quantity)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

pub(crate) async fn set_status(
    c: &mut Conn,
    r: &mut Reservation,
    status: Status,
    expires_at_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reservations SET status = $2, expires_at_ms = $3, updated_at_ms = $4 WHERE id = $1")
        .bind(&r.id)
        .bind(status.as_sql())
        .bind(expires_at_ms)
        .bind(now_millis())
        .execute(&mut *c)
        .await?;
    r.status = status;
    r.expires_at_ms = expires_at_ms;
    Ok(())
}

/// The items by product id: the order every transaction locks products in.
fn in_lock_order(items: &Items) -> Vec<&(String, i32)> {
    let mut sorted: Vec<_> = items.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    sorted
}

/// Takes the units out of stock, all or none (an error rolls the transaction
/// back). The conditional UPDATE decides on the row as it is after any
/// concurrent writer committed, so stock never goes below zero.
pub(crate) async fn take(c: &mut Conn, items: &Items, changed: &mut Vec<ProductRow>) -> Result<(), Error> {
    for (id, quantity) in in_lock_order(items) {
        let row: Option<ProductRow> = sqlx::query_as(concat!(
            "UPDATE products SET stock = stock - $2, updated_at_ms = $3, revision = revision + 1
             WHERE id = $1 AND stock >= $2 RETURNING ",
            columns!()
        ))
        .bind(id)
        .bind(*quantity)
        .bind(now_millis())
        .fetch_optional(&mut *c)
        .await?;
        match row {
            Some(row) => changed.push(row),
            None => {
                let product = get_one(c, id).await?;
                return Err(Error::Short(format!(
                    "not enough stock of '{}' ({}): {quantity} wanted, {} left",
                    product.name, product.id, product.stock
                )));
            }
        }
    }
    Ok(())
}

/// Puts the units back into stock.
pub(crate) async fn give_back(c: &mut Conn, items: &Items, changed: &mut Vec<ProductRow>) -> Result<(), Error> {
    for (id, quantity) in in_lock_order(items) {
        let row: ProductRow = sqlx::query_as(concat!(
            "UPDATE products SET stock = stock + $2, updated_at_ms = $3, revision = revision + 1
             WHERE id = $1 RETURNING ",
            columns!()
        ))
        .bind(id)
        .bind(*quantity)
        .bind(now_millis())
        .fetch_one(&mut *c)
        .await?;
        changed.push(row);
    }
    Ok(())
}

/// The ids of held reservations whose time was up at `now`, in id order.
pub(crate) async fn expired_reservations(db: &Db, now: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM reservations WHERE status = 'HELD' AND expires_at_ms <= $1 ORDER BY id")
        .bind(now)
        .fetch_all(db.pool())
        .await
}
