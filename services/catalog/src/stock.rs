//! Stock reservations, the catalog's steps of the checkout saga. A reservation is
//! named by the checkout's idempotency key and moves HELD -> CONFIRMED (sold) or
//! HELD -> RELEASED (compensation, or expiry of a checkout that died midway), and
//! CONFIRMED -> RETURNED after a refund. Each step runs in one write transaction
//! with the stock it moves, holding the reservation's row, so stock and
//! reservations always agree however many replicas run the steps; and each is
//! idempotent: repeating it changes nothing more. The queries are in db.rs.

use std::time::Duration;

use meshwork_service_kit::{
    db::{Conn, sqlx},
    time::now_millis,
};

use crate::{
    Error,
    db::{self, ProductRow, Store, get_one},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Held,
    Confirmed,
    Released,
    Returned,
}

impl Status {
    pub(crate) fn as_sql(self) -> &'static str {
        match self {
            Status::Held => "HELD",
            Status::Confirmed => "CONFIRMED",
            Status::Released => "RELEASED",
            Status::Returned => "RETURNED",
        }
    }

    pub(crate) fn from_sql(s: &str) -> Status {
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
    /// When a HELD reservation runs out (Unix milliseconds).
    pub expires_at_ms: i64,
}

/// How often held reservations are checked for expiry.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Store {
    /// Holds `items` for `hold_ms` under `id` and answers with the products as they
    /// are now. Repeating it replays; after a release it takes the units anew.
    pub async fn reserve(
        &self,
        id: String,
        items: Items,
        hold_ms: i64,
    ) -> Result<(Reservation, Vec<ProductRow>), Error> {
        let mut tx = self.db.write().await?;
        let mut changed = Vec::new();
        let expires = now_millis().saturating_add(hold_ms);
        let reservation = if db::insert_reservation(&mut tx, &id, expires).await? {
            db::take(&mut tx, &items, &mut changed).await?;
            db::insert_reservation_items(&mut tx, &id, &items).await?;
            Reservation {
                id,
                status: Status::Held,
                items,
                expires_at_ms: expires,
            }
        } else {
            match self.locked(&mut tx, &id).await? {
                r if r.items != items => {
                    return Err(Error::Conflict(format!("reservation '{id}' was made with other items")));
                }
                r if r.status == Status::Returned => {
                    return Err(Error::Conflict(format!(
                        "reservation '{id}' was sold and returned; a new checkout needs a new key"
                    )));
                }
                mut r if r.status == Status::Released => {
                    db::take(&mut tx, &r.items, &mut changed).await?;
                    db::set_status(&mut tx, &mut r, Status::Held, expires).await?;
                    r
                }
                r => r,
            }
        };
        let mut products = Vec::with_capacity(reservation.items.len());
        for (product, _) in &reservation.items {
            products.push(get_one(&mut tx, product).await?);
        }
        tx.commit().await?;
        self.publish(changed);
        Ok((reservation, products))
    }

    /// Marks the reservation sold. One released meanwhile (it expired while the
    /// charge ran) takes its units anew, or fails naming the product now short.
    pub async fn confirm(&self, id: String) -> Result<Reservation, Error> {
        let mut tx = self.db.write().await?;
        let mut changed = Vec::new();
        let mut r = self.locked(&mut tx, &id).await?;
        match r.status {
            Status::Confirmed => {}
            Status::Held => db::set_status(&mut tx, &mut r, Status::Confirmed, i64::MAX).await?,
            Status::Released => {
                db::take(&mut tx, &r.items, &mut changed).await?;
                db::set_status(&mut tx, &mut r, Status::Confirmed, i64::MAX).await?;
            }
            Status::Returned => {
                return Err(Error::Conflict(format!("reservation '{id}' was already returned")));
            }
        }
        tx.commit().await?;
        self.publish(changed);
        Ok(r)
    }

    /// Compensation: a held reservation's units go back. Anything else is left alone.
    pub async fn release(&self, id: String) -> Result<Reservation, Error> {
        let mut tx = self.db.write().await?;
        let mut changed = Vec::new();
        let mut r = self.locked(&mut tx, &id).await?;
        if r.status == Status::Held {
            db::give_back(&mut tx, &r.items, &mut changed).await?;
            db::set_status(&mut tx, &mut r, Status::Released, 0).await?;
        }
        tx.commit().await?;
        self.publish(changed);
        Ok(r)
    }

    /// After a refund: a sold reservation's units go back, once.
    pub async fn return_stock(&self, id: String) -> Result<Reservation, Error> {
        let mut tx = self.db.write().await?;
        let mut changed = Vec::new();
        let mut r = self.locked(&mut tx, &id).await?;
        match r.status {
            Status::Returned => {}
            Status::Confirmed => {
                db::give_back(&mut tx, &r.items, &mut changed).await?;
                db::set_status(&mut tx, &mut r, Status::Returned, 0).await?;
            }
            Status::Held | Status::Released => {
                return Err(Error::Conflict(format!(
                    "reservation '{id}' was never sold, so nothing can be returned"
                )));
            }
        }
        tx.commit().await?;
        self.publish(changed);
        Ok(r)
    }

    /// Releases every held reservation whose time is up; how many it released.
    /// Each in a transaction of its own, which looks again under the row's lock:
    /// another replica's sweeper, or a confirm, may have got there first.
    pub async fn expire(&self) -> Result<usize, Error> {
        let now = now_millis();
        let mut released = 0;
        for id in db::expired_reservations(&self.db, now).await? {
            let mut tx = self.db.write().await?;
            let mut changed = Vec::new();
            match db::lock_reservation(&self.db, &mut tx, &id).await? {
                Some(mut r) if r.status == Status::Held && r.expires_at_ms <= now => {
                    db::give_back(&mut tx, &r.items, &mut changed).await?;
                    db::set_status(&mut tx, &mut r, Status::Released, 0).await?;
                    released += 1;
                }
                _ => {}
            }
            tx.commit().await?;
            self.publish(changed);
        }
        Ok(released)
    }

    async fn locked(&self, tx: &mut Conn, id: &str) -> Result<Reservation, Error> {
        db::lock_reservation(&self.db, tx, id)
            .await?
            .ok_or_else(|| Error::UnknownReservation(id.to_owned()))
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
                Err(Error::Db(sqlx::Error::PoolClosed)) => return,
                Err(e) => tracing::warn!(error = %e, "cannot release expired stock reservations; will try again"),
            }
        }
    });
}
