//! Stock reservations, the catalog's steps of the checkout saga. A reservation is
//! named by the checkout's idempotency key and moves HELD -> CONFIRMED (sold) or
//! HELD -> RELEASED (compensation, or expiry of a checkout that died midway), and
//! CONFIRMED -> RETURNED after a refund. Each step runs in one IMMEDIATE
//! transaction with the stock it moves, so stock and reservations always agree,
//! and each is idempotent: repeating it changes nothing more.

use std::time::Duration;

use meshwork_service_kit::{
    db::{self, rusqlite},
    time::now_millis,
};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::{
    Error,
    db::{COLUMNS, ProductRow, Store, get_one, product_row},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Held,
    Confirmed,
    Released,
    Returned,
}

impl Status {
    fn as_sql(self) -> &'static str {
        match self {
            Status::Held => "HELD",
            Status::Confirmed => "CONFIRMED",
            Status::Released => "RELEASED",
            Status::Returned => "RETURNED",
        }
    }

    fn from_sql(s: &str) -> Status {
        match s {
            "HELD" => Status::Held,
            "CONFIRMED" => Status::Confirmed,
            "RETURNED" => Status::Returned,
            _ => Status::Released,
        }
    }
}

/// (product id, units), in the order reserved.
pub type Items = Vec<(String, i32)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub status: Status,
    pub items: Items,
}

/// How often held reservations are checked for expiry.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

fn load(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Reservation>> {
    let Some(status) = tx
        .query_row("SELECT status FROM reservations WHERE id = ?1", [id], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = tx.prepare_cached(
        "SELECT product_id, quantity FROM reservation_items WHERE reservation_id = ?1 ORDER BY position",
    )?;
    let items = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(Some(Reservation {
        id: id.to_owned(),
        status: Status::from_sql(&status),
        items,
    }))
}

fn set_status(tx: &Transaction<'_>, r: &mut Reservation, status: Status, expires_at_ms: i64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE reservations SET status = ?2, expires_at_ms = ?3, updated_at_ms = ?4 WHERE id = ?1",
        params![r.id, status.as_sql(), expires_at_ms, now_millis()],
    )?;
    r.status = status;
    Ok(())
}

/// Takes the units out of stock, all or none (an error rolls the transaction back).
fn take(tx: &Transaction<'_>, items: &Items, changed: &mut Vec<ProductRow>) -> Result<(), Error> {
    let mut stmt = tx.prepare_cached(&format!(
        "UPDATE products SET stock = stock - ?2, updated_at_ms = ?3, revision = revision + 1
         WHERE id = ?1 AND stock >= ?2 RETURNING {COLUMNS}"
    ))?;
    for (id, quantity) in items {
        match stmt
            .query_row(params![id, quantity, now_millis()], product_row)
            .optional()?
        {
            Some(row) => changed.push(row),
            None => {
                let product = get_one(tx, id)?;
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
fn give_back(tx: &Transaction<'_>, items: &Items, changed: &mut Vec<ProductRow>) -> Result<(), Error> {
    let mut stmt = tx.prepare_cached(&format!(
        "UPDATE products SET stock = stock + ?2, updated_at_ms = ?3, revision = revision + 1
         WHERE id = ?1 RETURNING {COLUMNS}"
    ))?;
    for (id, quantity) in items {
        changed.push(stmt.query_row(params![id, quantity, now_millis()], product_row)?);
    }
    Ok(())
}

impl Store {
    /// Runs one saga step in a write transaction and publishes the stock it changed.
    async fn step<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &mut Vec<ProductRow>) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let changes = self.changes.clone();
        self.db
            .call(move |c| {
                let tx = db::write(c)?;
                let mut changed = Vec::new();
                let result = f(&tx, &mut changed)?;
                tx.commit()?;
                for row in changed {
                    // No receivers is not an error: nobody is watching.
                    let _ = changes.send(row);
                }
                Ok(result)
            })
            .await
    }

    /// Holds `items` for `hold_ms` under `id` and answers with the products as they
    /// are now. Repeating it replays; after a release it takes the units anew.
    pub async fn reserve(
        &self,
        id: String,
        items: Items,
        hold_ms: i64,
    ) -> Result<(Reservation, Vec<ProductRow>), Error> {
        self.step(move |tx, changed| {
            let expires = now_millis().saturating_add(hold_ms);
            let reservation = match load(tx, &id)? {
                Some(r) if r.items != items => {
                    return Err(Error::Conflict(format!(
                        "reservation '{id}' was made with other items"
                    )));
                }
                Some(r) if r.status == Status::Returned => {
                    return Err(Error::Conflict(format!(
                        "reservation '{id}' was sold and returned; a new checkout needs a new key"
                    )));
                }
                Some(mut r) if r.status == Status::Released => {
                    take(tx, &r.items, changed)?;
                    set_status(tx, &mut r, Status::Held, expires)?;
                    r
                }
                Some(r) => r,
                None => {
                    take(tx, &items, changed)?;
                    let now = now_millis();
                    tx.execute(
                        "INSERT INTO reservations (id, status, expires_at_ms, updated_at_ms) VALUES (?1, 'HELD', ?2, ?3)",
                        params![id, expires, now],
                    )?;
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO reservation_items (reservation_id, position, product_id, quantity)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?;
                    for (position, (product, quantity)) in items.iter().enumerate() {
                        insert.execute(params![id, position as i64, product, quantity])?;
                    }
                    Reservation {
                        id,
                        status: Status::Held,
                        items,
                    }
                }
            };
            let products = reservation
                .items
                .iter()
                .map(|(product, _)| get_one(tx, product))
                .collect::<Result<_, _>>()?;
            Ok((reservation, products))
        })
        .await
    }

    /// Marks the reservation sold. One released meanwhile (it expired while the
    /// charge ran) takes its units anew, or fails naming the product now short.
    pub async fn confirm(&self, id: String) -> Result<Reservation, Error> {
        self.step(move |tx, changed| {
            let mut r = load(tx, &id)?.ok_or_else(|| Error::UnknownReservation(id.clone()))?;
            match r.status {
                Status::Confirmed => {}
                Status::Held => set_status(tx, &mut r, Status::Confirmed, i64::MAX)?,
                Status::Released => {
                    take(tx, &r.items, changed)?;
                    set_status(tx, &mut r, Status::Confirmed, i64::MAX)?;
                }
                Status::Returned => {
                    return Err(Error::Conflict(format!("reservation '{id}' was already returned")));
                }
            }
            Ok(r)
        })
        .await
    }

    /// Compensation: a held reservation's units go back. Anything else is left alone.
    pub async fn release(&self, id: String) -> Result<Reservation, Error> {
        self.step(move |tx, changed| {
            let mut r = load(tx, &id)?.ok_or_else(|| Error::UnknownReservation(id.clone()))?;
            if r.status == Status::Held {
                give_back(tx, &r.items, changed)?;
                set_status(tx, &mut r, Status::Released, 0)?;
            }
            Ok(r)
        })
        .await
    }

    /// After a refund: a sold reservation's units go back, once.
    pub async fn return_stock(&self, id: String) -> Result<Reservation, Error> {
        self.step(move |tx, changed| {
            let mut r = load(tx, &id)?.ok_or_else(|| Error::UnknownReservation(id.clone()))?;
            match r.status {
                Status::Returned => {}
                Status::Confirmed => {
                    give_back(tx, &r.items, changed)?;
                    set_status(tx, &mut r, Status::Returned, 0)?;
                }
                Status::Held | Status::Released => {
                    return Err(Error::Conflict(format!(
                        "reservation '{id}' was never sold, so nothing can be returned"
                    )));
                }
            }
            Ok(r)
        })
        .await
    }

    /// Releases every held reservation whose time is up; how many it released.
    pub async fn expire(&self) -> Result<usize, Error> {
        self.step(move |tx, changed| {
            let ids: Vec<String> = {
                let mut stmt =
                    tx.prepare_cached("SELECT id FROM reservations WHERE status = 'HELD' AND expires_at_ms <= ?1")?;
                stmt.query_map([now_millis()], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            for id in &ids {
                if let Some(mut r) = load(tx, id)? {
                    give_back(tx, &r.items, changed)?;
                    set_status(tx, &mut r, Status::Released, 0)?;
                }
            }
            Ok(ids.len())
        })
        .await
    }
}

/// Releases expired reservations for as long as the process runs. Every replica
/// sweeps; the write transaction makes each release happen once.
pub fn spawn_sweeper(store: Store) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.expire().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(reservations = n, "released expired stock reservations"),
                Err(Error::Closed(_)) => return,
                Err(e) => tracing::warn!(error = %e, "cannot release expired stock reservations; will try again"),
            }
        }
    });
}
