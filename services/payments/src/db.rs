//! Orders in `payments.db` (SQLite) or the service's PostgreSQL database, the same
//! SQL for both. A charge's idempotency key is UNIQUE and the order is inserted
//! with it before anything else (`ON CONFLICT DO NOTHING`), so a key can never
//! produce two orders, however many charges with it race on however many
//! replicas: a racing insert waits for the first to commit and then finds its order.

use meshwork_service_kit::{
    db::{self, Conn, Database, Db, sqlx},
    time::now_millis,
};
use sqlx::{FromRow, Row, any::AnyRow};

use crate::{
    Error, NAME,
    validate::{Charge, Line},
};

/// Never edit a released migration; append a new one. Money and milliseconds
/// are BIGINT (PostgreSQL's INTEGER is 32 bits; to SQLite both are INTEGER, as
/// the STRICT tables of older builds had it).
const MIGRATIONS: &[&str] = &["
CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    -- sha256 of the charge request, to refuse a reused key with other contents.
    request_hash    TEXT NOT NULL,
    total_minor     BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('PAID', 'REFUNDED')),
    created_at_ms   BIGINT NOT NULL,
    refunded_at_ms  BIGINT
);
CREATE INDEX orders_by_user ON orders (user_id, created_at_ms DESC, id DESC);
CREATE TABLE order_lines (
    order_id         TEXT NOT NULL REFERENCES orders (id),
    position         INTEGER NOT NULL,
    product_id       TEXT NOT NULL,
    name             TEXT NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity >= 1),
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, position)
);
"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Paid,
    Refunded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub id: String,
    pub user_id: String,
    pub idempotency_key: String,
    pub lines: Vec<Line>,
    pub total_minor: i64,
    pub currency: String,
    pub status: Status,
    pub created_at_ms: i64,
    pub refunded_at_ms: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

/// The columns [`OrderRow`] is read from, in this order.
macro_rules! columns {
    () => {
        "id, user_id, idempotency_key, total_minor, currency, status, created_at_ms, refunded_at_ms"
    };
}

/// An order without its lines (see [`with_lines`]).
impl FromRow<'_, AnyRow> for OrderRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        let status: String = r.try_get(5)?;
        Ok(OrderRow {
            id: r.try_get(0)?,
            user_id: r.try_get(1)?,
            idempotency_key: r.try_get(2)?,
            lines: Vec::new(),
            total_minor: r.try_get(3)?,
            currency: r.try_get(4)?,
            status: if status == "REFUNDED" {
                Status::Refunded
            } else {
                Status::Paid
            },
            created_at_ms: r.try_get(6)?,
            refunded_at_ms: r.try_get(7)?,
        })
    }
}

async fn with_lines(c: &mut Conn, mut order: OrderRow) -> Result<OrderRow, sqlx::Error> {
    let lines: Vec<(String, String, i32, i64)> = sqlx::query_as(
        "SELECT product_id, name, quantity, unit_price_minor FROM order_lines WHERE order_id = $1 ORDER BY position",
    )
    .bind(&order.id)
    .fetch_all(&mut *c)
    .await?;
    order.lines = lines
        .into_iter()
        .map(|(product_id, name, quantity, unit_price_minor)| Line {
            product_id,
            name,
            quantity,
            unit_price_minor,
        })
        .collect();
    Ok(order)
}

async fn get(c: &mut Conn, id: &str) -> Result<OrderRow, Error> {
    let order: OrderRow = sqlx::query_as(concat!("SELECT ", columns!(), " FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| Error::OrderNotFound(id.to_owned()))?;
    Ok(with_lines(c, order).await?)
}

impl Store {
    pub async fn open(database: &Database) -> anyhow::Result<Self> {
        Ok(Store {
            db: db::open(database, NAME, MIGRATIONS).await?,
        })
    }

    /// Records `charge` as a PAID order, or returns the order its key already made
    /// (`true` = replayed). A key reused with other contents is refused.
    pub async fn charge(&self, charge: Charge) -> Result<(OrderRow, bool), Error> {
        let mut tx = self.db.write().await?;
        let order = OrderRow {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: charge.user_id,
            idempotency_key: charge.idempotency_key,
            lines: charge.lines,
            total_minor: charge.total_minor,
            currency: charge.currency,
            status: Status::Paid,
            created_at_ms: now_millis(),
            refunded_at_ms: None,
        };
        // The key first: on PostgreSQL a concurrent charge with it waits here
        // until the first commits, then inserts nothing and reads that order.
        let inserted = sqlx::query(
            "INSERT INTO orders (id, user_id, idempotency_key, request_hash, total_minor, currency, status, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, 'PAID', $7)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&order.id)
        .bind(&order.user_id)
        .bind(&order.idempotency_key)
        .bind(&charge.fingerprint)
        .bind(order.total_minor)
        .bind(&order.currency)
        .bind(order.created_at_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            let (id, hash): (String, String) =
                sqlx::query_as("SELECT id, request_hash FROM orders WHERE idempotency_key = $1")
                    .bind(&order.idempotency_key)
                    .fetch_one(&mut *tx)
                    .await?;
            if hash != charge.fingerprint {
                return Err(Error::KeyReused(order.idempotency_key));
            }
            return Ok((get(&mut tx, &id).await?, true));
        }
        for (position, line) in order.lines.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_lines (order_id, position, product_id, name, quantity, unit_price_minor)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&order.id)
            .bind(position as i64)
            .bind(&line.product_id)
            .bind(&line.name)
            .bind(line.quantity)
            .bind(line.unit_price_minor)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok((order, false))
    }

    pub async fn get(&self, id: String) -> Result<OrderRow, Error> {
        get(&mut *self.db.pool().acquire().await?, &id).await
    }

    /// The user's orders, newest first.
    pub async fn list(&self, user_id: String) -> Result<Vec<OrderRow>, Error> {
        let mut c = self.db.pool().acquire().await?;
        let orders: Vec<OrderRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM orders WHERE user_id = $1 ORDER BY created_at_ms DESC, id DESC"
        ))
        .bind(&user_id)
        .fetch_all(&mut *c)
        .await?;
        let mut full = Vec::with_capacity(orders.len());
        for order in orders {
            full.push(with_lines(&mut c, order).await?);
        }
        Ok(full)
    }

    /// Marks a PAID order REFUNDED; a refunded order is returned unchanged.
    pub async fn refund(&self, id: String) -> Result<OrderRow, Error> {
        let mut tx = self.db.write().await?;
        // The UPDATE locks the row, so of two refunds racing one makes the change.
        sqlx::query("UPDATE orders SET status = 'REFUNDED', refunded_at_ms = $2 WHERE id = $1 AND status = 'PAID'")
            .bind(&id)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        let order = get(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{self, Charge};
    use meshwork_proto::{
        common::Money,
        payments::{ChargeRequest, OrderLine},
    };

    fn charge(key: &str) -> Charge {
        let usd = |amount_minor| {
            Some(Money {
                amount_minor,
                currency_code: "USD".into(),
            })
        };
        validate::charge(ChargeRequest {
            idempotency_key: key.into(),
            user_id: "u".into(),
            lines: vec![OrderLine {
                product_id: "p".into(),
                name: "P".into(),
                quantity: 1,
                unit_price: usd(5),
            }],
            total: usd(5),
        })
        .unwrap()
    }

    /// Two pools (as two processes on one file would have) racing one key.
    #[tokio::test]
    async fn one_key_one_order_across_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = Database::Sqlite(dir.path().join("payments.db"));
        let stores = [Store::open(&path).await.unwrap(), Store::open(&path).await.unwrap()];
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = stores[i % 2].clone();
                tokio::spawn(async move { store.charge(charge("shared")).await })
            })
            .collect();
        let mut ids = Vec::new();
        let mut fresh = 0;
        for task in tasks {
            let (order, replayed) = task.await.unwrap().unwrap();
            ids.push(order.id);
            fresh += usize::from(!replayed);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "every charge returned the same order");
        assert_eq!(fresh, 1);
        let orders = stores[0].list("u".into()).await.unwrap();
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0].lines.len(), 1);
    }
}
