//! Orders in `payments.db`. A charge's idempotency key is UNIQUE and is checked and
//! stored in the same IMMEDIATE transaction as the order, so a key can never produce
//! two orders, however many charges with it race.

use std::path::Path;

use meshwork_service_kit::{
    db::{self, Db, rusqlite},
    time::now_millis,
};
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

use crate::{
    Error,
    validate::{Charge, Line},
};

const MIGRATIONS: &[&str] = &["
CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    -- sha256 of the charge request, to refuse a reused key with other contents.
    request_hash    TEXT NOT NULL,
    total_minor     INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('PAID', 'REFUNDED')),
    created_at_ms   INTEGER NOT NULL,
    refunded_at_ms  INTEGER
) STRICT;
CREATE INDEX orders_by_user ON orders (user_id, created_at_ms DESC, id DESC);
CREATE TABLE order_lines (
    order_id         TEXT NOT NULL REFERENCES orders (id),
    position         INTEGER NOT NULL,
    product_id       TEXT NOT NULL,
    name             TEXT NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity >= 1),
    unit_price_minor INTEGER NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, position)
) STRICT;
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

const COLUMNS: &str = "id, user_id, idempotency_key, total_minor, currency, status, created_at_ms, refunded_at_ms";

fn order_row(r: &Row<'_>) -> rusqlite::Result<OrderRow> {
    let status: String = r.get(5)?;
    Ok(OrderRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        idempotency_key: r.get(2)?,
        lines: Vec::new(),
        total_minor: r.get(3)?,
        currency: r.get(4)?,
        status: if status == "REFUNDED" {
            Status::Refunded
        } else {
            Status::Paid
        },
        created_at_ms: r.get(6)?,
        refunded_at_ms: r.get(7)?,
    })
}

fn with_lines(c: &rusqlite::Connection, mut order: OrderRow) -> rusqlite::Result<OrderRow> {
    let mut stmt = c.prepare_cached(
        "SELECT product_id, name, quantity, unit_price_minor FROM order_lines WHERE order_id = ?1 ORDER BY position",
    )?;
    let lines = stmt.query_map([&order.id], |r| {
        Ok(Line {
            product_id: r.get(0)?,
            name: r.get(1)?,
            quantity: r.get(2)?,
            unit_price_minor: r.get(3)?,
        })
    })?;
    order.lines = lines.collect::<Result<_, _>>()?;
    Ok(order)
}

fn get(c: &rusqlite::Connection, id: &str) -> Result<OrderRow, Error> {
    let order = c
        .query_row(&format!("SELECT {COLUMNS} FROM orders WHERE id = ?1"), [id], order_row)
        .optional()?
        .ok_or_else(|| Error::OrderNotFound(id.to_owned()))?;
    Ok(with_lines(c, order)?)
}

impl Store {
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Store {
            db: db::open(path, MIGRATIONS).await?,
        })
    }

    /// Records `charge` as a PAID order, or returns the order its key already made
    /// (`true` = replayed). A key reused with other contents is refused.
    pub async fn charge(&self, charge: Charge) -> Result<(OrderRow, bool), Error> {
        self.db
            .call(move |c| {
                // IMMEDIATE takes the write lock up front, so the look-up and the insert
                // cannot interleave with another writer's.
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let existing: Option<(String, String)> = tx
                    .query_row(
                        "SELECT id, request_hash FROM orders WHERE idempotency_key = ?1",
                        [&charge.idempotency_key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((id, hash)) = existing {
                    if hash != charge.fingerprint {
                        return Err(Error::KeyReused(charge.idempotency_key));
                    }
                    return Ok((get(&tx, &id)?, true));
                }
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
                tx.execute(
                    "INSERT INTO orders (id, user_id, idempotency_key, request_hash, total_minor, currency, status, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'PAID', ?7)",
                    params![
                        order.id,
                        order.user_id,
                        order.idempotency_key,
                        charge.fingerprint,
                        order.total_minor,
                        order.currency,
                        order.created_at_ms
                    ],
                )?;
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO order_lines (order_id, position, product_id, name, quantity, unit_price_minor)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for (position, line) in order.lines.iter().enumerate() {
                        insert.execute(params![
                            order.id,
                            position as i64,
                            line.product_id,
                            line.name,
                            line.quantity,
                            line.unit_price_minor
                        ])?;
                    }
                }
                tx.commit()?;
                Ok((order, false))
            })
            .await
    }

    pub async fn get(&self, id: String) -> Result<OrderRow, Error> {
        self.db.call(move |c| get(c, &id)).await
    }

    /// The user's orders, newest first.
    pub async fn list(&self, user_id: String) -> Result<Vec<OrderRow>, Error> {
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM orders WHERE user_id = ?1 ORDER BY created_at_ms DESC, id DESC"
                ))?;
                let orders = stmt.query_map([&user_id], order_row)?.collect::<Result<Vec<_>, _>>()?;
                Ok(orders
                    .into_iter()
                    .map(|o| with_lines(c, o))
                    .collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Marks a PAID order REFUNDED; a refunded order is returned unchanged.
    pub async fn refund(&self, id: String) -> Result<OrderRow, Error> {
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute(
                    "UPDATE orders SET status = 'REFUNDED', refunded_at_ms = ?2 WHERE id = ?1 AND status = 'PAID'",
                    params![id, now_millis()],
                )?;
                let order = get(&tx, &id)?;
                tx.commit()?;
                Ok(order)
            })
            .await
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

    /// Two connections (as two processes on one file would have) racing one key.
    #[tokio::test]
    async fn one_key_one_order_across_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payments.db");
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
