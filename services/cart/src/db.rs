//! Carts in `cart.db` (SQLite) or the service's PostgreSQL database, the same SQL for
//! both: one row per user with a random cart id and a version that is bumped on every
//! change, and the items. The (cart id, version) pair names the exact contents a
//! checkout charged, which is what makes its idempotency key.
//!
//! Every change locks the cart's row before it touches the items (by bumping it, or
//! `FOR UPDATE` on PostgreSQL; SQLite's write transaction holds the whole file), so
//! changes to one cart from any replica happen one after the other.

use meshwork_service_kit::{
    db::{self, Conn, Database, Db, Sql, sqlx},
    time::now_millis,
};

use crate::{Error, NAME, validate::MAX_QUANTITY};

/// Never edit a released migration; append a new one. The first was written
/// for SQLite alone (STRICT); it reads the same to both now.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE carts (
    user_id TEXT PRIMARY KEY,
    -- Random and fixed for the cart's life, so a cart made again after its database
    -- was lost never repeats an old cart's idempotency keys.
    cart_id TEXT NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE cart_items (
    user_id    TEXT NOT NULL REFERENCES carts (user_id),
    product_id TEXT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity >= 1),
    PRIMARY KEY (user_id, product_id)
);
",
    // The order items were first added in (PostgreSQL has no rowid to keep it).
    // INTEGER: older builds' STRICT table takes no other integer type.
    "ALTER TABLE cart_items ADD COLUMN position INTEGER NOT NULL DEFAULT 0;",
    // The checkout log (see recovery.rs): one row per checkout under way, so one
    // that died or lost its answer is finished or undone without its shopper.
    "
CREATE TABLE checkouts (
    idempotency_key TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    -- The priced ChargeRequest (protobuf, hex) once the stock is held; NULL before.
    charge     TEXT,
    -- 'open' until the charged items leave the cart, then 'settled' (kept: a late
    -- retry of the same checkout must not take the items out a second time).
    state      TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX checkouts_open ON checkouts (state, updated_ms);
",
];

/// Locks the cart's row until the transaction ends.
const LOCK_CART: Sql = Sql {
    sqlite: "SELECT version FROM carts WHERE user_id = $1",
    postgres: "SELECT version FROM carts WHERE user_id = $1 FOR UPDATE",
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub product_id: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartRow {
    pub user_id: String,
    /// Empty for a user who never had a cart.
    pub cart_id: String,
    pub version: i64,
    /// In the order first added.
    pub items: Vec<Item>,
}

/// A checkout in the log that has not settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCheckout {
    pub key: String,
    pub user_id: String,
    /// The priced charge (protobuf, hex); `None` while only the stock was asked for.
    pub charge: Option<String>,
    pub updated_ms: i64,
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

async fn read(c: &mut Conn, user_id: &str) -> Result<CartRow, sqlx::Error> {
    let head: Option<(String, i64)> = sqlx::query_as("SELECT cart_id, version FROM carts WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await?;
    let (cart_id, version) = head.unwrap_or_default();
    let items: Vec<(String, i32)> =
        sqlx::query_as("SELECT product_id, quantity FROM cart_items WHERE user_id = $1 ORDER BY position, product_id")
            .bind(user_id)
            .fetch_all(&mut *c)
            .await?;
    Ok(CartRow {
        user_id: user_id.to_owned(),
        cart_id,
        version,
        items: items
            .into_iter()
            .map(|(product_id, quantity)| Item { product_id, quantity })
            .collect(),
    })
}

async fn quantity_of(c: &mut Conn, user_id: &str, product_id: &str) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar("SELECT quantity FROM cart_items WHERE user_id = $1 AND product_id = $2")
        .bind(user_id)
        .bind(product_id)
        .fetch_optional(&mut *c)
        .await
}

async fn bump(c: &mut Conn, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE carts SET version = version + 1 WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

impl Store {
    pub async fn open(database: &Database) -> anyhow::Result<Self> {
        Ok(Store {
            db: db::open(database, NAME, MIGRATIONS).await?,
        })
    }

    pub async fn get(&self, user_id: String) -> Result<CartRow, Error> {
        Ok(read(&mut *self.db.pool().acquire().await?, &user_id).await?)
    }

    /// Adds `quantity` units (to any already there).
    pub async fn add(&self, user_id: String, product_id: String, quantity: i32) -> Result<CartRow, Error> {
        let mut tx = self.db.write().await?;
        // Makes the cart or bumps its version, which locks its row; an error
        // below rolls the bump back.
        sqlx::query(
            "INSERT INTO carts (user_id, cart_id, version) VALUES ($1, $2, 1)
             ON CONFLICT (user_id) DO UPDATE SET version = carts.version + 1",
        )
        .bind(&user_id)
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&mut *tx)
        .await?;
        let have = quantity_of(&mut tx, &user_id, &product_id).await?.unwrap_or(0);
        let total = have.saturating_add(quantity);
        if total > MAX_QUANTITY {
            return Err(Error::invalid(
                "quantity",
                format!("would make {total} of '{product_id}' in the cart, more than {MAX_QUANTITY}"),
            ));
        }
        sqlx::query(
            "INSERT INTO cart_items (user_id, product_id, quantity, position)
             VALUES ($1, $2, $3, (SELECT COALESCE(MAX(position), 0) + 1 FROM cart_items WHERE user_id = $1))
             ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = excluded.quantity",
        )
        .bind(&user_id)
        .bind(&product_id)
        .bind(total)
        .execute(&mut *tx)
        .await?;
        let cart = read(&mut tx, &user_id).await?;
        tx.commit().await?;
        Ok(cart)
    }

    /// Removes the product whatever its quantity; removing what is not there changes
    /// nothing (not even the version).
    pub async fn remove(&self, user_id: String, product_id: String) -> Result<CartRow, Error> {
        let mut tx = self.db.write().await?;
        sqlx::query(self.db.sql(&LOCK_CART))
            .bind(&user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let removed = sqlx::query("DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2")
            .bind(&user_id)
            .bind(&product_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed > 0 {
            bump(&mut tx, &user_id).await?;
        }
        let cart = read(&mut tx, &user_id).await?;
        tx.commit().await?;
        Ok(cart)
    }

    /// After a successful charge: takes the charged items out of the cart, bumps the
    /// version and marks the checkout `key` settled, all at once. Subtracting rather
    /// than clearing keeps anything added while the checkout ran, which was not
    /// charged. A checkout already settled (by a retry on another replica, or by the
    /// recovery) changes nothing: the items left once.
    pub async fn settle(&self, user_id: String, charged: Vec<Item>, key: &str) -> Result<(), Error> {
        let mut tx = self.db.write().await?;
        sqlx::query(self.db.sql(&LOCK_CART))
            .bind(&user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let first = sqlx::query(
            "INSERT INTO checkouts (idempotency_key, user_id, state, updated_ms) VALUES ($1, $2, 'settled', $3)
             ON CONFLICT (idempotency_key) DO UPDATE SET state = 'settled', updated_ms = excluded.updated_ms
             WHERE checkouts.state = 'open'",
        )
        .bind(key)
        .bind(&user_id)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !first {
            return Ok(());
        }
        for item in &charged {
            match quantity_of(&mut tx, &user_id, &item.product_id).await? {
                Some(have) if have > item.quantity => {
                    sqlx::query("UPDATE cart_items SET quantity = $3 WHERE user_id = $1 AND product_id = $2")
                        .bind(&user_id)
                        .bind(&item.product_id)
                        .bind(have - item.quantity)
                        .execute(&mut *tx)
                        .await?;
                }
                Some(_) => {
                    sqlx::query("DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2")
                        .bind(&user_id)
                        .bind(&item.product_id)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {}
            }
        }
        bump(&mut tx, &user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Logs that checkout `key` is under way (again, for a retry), before any
    /// step: from here on, if it dies, the recovery finishes or undoes it. False
    /// if it has settled already.
    pub async fn open_checkout(&self, key: &str, user_id: &str) -> Result<bool, Error> {
        let mut tx = self.db.write().await?;
        sqlx::query(
            "INSERT INTO checkouts (idempotency_key, user_id, state, updated_ms) VALUES ($1, $2, 'open', $3)
             ON CONFLICT (idempotency_key) DO UPDATE SET updated_ms = excluded.updated_ms
             WHERE checkouts.state = 'open'",
        )
        .bind(key)
        .bind(user_id)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        let state: String = sqlx::query_scalar("SELECT state FROM checkouts WHERE idempotency_key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(state == "open")
    }

    /// Logs the priced charge of checkout `key`, just before it is sent.
    pub async fn priced(&self, key: &str, charge: &str) -> Result<(), Error> {
        sqlx::query("UPDATE checkouts SET charge = $2, updated_ms = $3 WHERE idempotency_key = $1 AND state = 'open'")
            .bind(key)
            .bind(charge)
            .bind(now_millis())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Forgets checkout `key` once it is undone (nothing charged, stock released):
    /// a retry starts it again from the beginning.
    pub async fn forget_checkout(&self, key: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM checkouts WHERE idempotency_key = $1 AND state = 'open'")
            .bind(key)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Whether checkout `key` is in the log and not settled.
    pub async fn is_open(&self, key: &str) -> Result<bool, Error> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM checkouts WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(state.as_deref() == Some("open"))
    }

    /// Open checkouts untouched since `before_ms`, oldest first, at most `limit`.
    pub async fn stale_checkouts(&self, before_ms: i64, limit: i64) -> Result<Vec<OpenCheckout>, Error> {
        let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT idempotency_key, user_id, charge, updated_ms FROM checkouts
             WHERE state = 'open' AND updated_ms < $1 ORDER BY updated_ms LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, user_id, charge, updated_ms)| OpenCheckout {
                key,
                user_id,
                charge,
                updated_ms,
            })
            .collect())
    }

    /// Takes `checkout` for this replica's recovery: true if no one touched it
    /// since it was read (another replica's recovery, or a retry by its shopper).
    pub async fn claim(&self, checkout: &OpenCheckout) -> Result<bool, Error> {
        let claimed = sqlx::query(
            "UPDATE checkouts SET updated_ms = $3 WHERE idempotency_key = $1 AND state = 'open' AND updated_ms = $2",
        )
        .bind(&checkout.key)
        .bind(checkout.updated_ms)
        .bind(now_millis().max(checkout.updated_ms + 1))
        .execute(self.db.pool())
        .await?
        .rows_affected();
        Ok(claimed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_and_settling() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Database::Sqlite(dir.path().join("cart.db")))
            .await
            .unwrap();
        let empty = store.get("u".into()).await.unwrap();
        assert_eq!((empty.items.len(), empty.version), (0, 0));

        store.add("u".into(), "b".into(), 1).await.unwrap();
        store.add("u".into(), "a".into(), 2).await.unwrap();
        let cart = store.add("u".into(), "b".into(), 3).await.unwrap();
        assert_eq!(cart.version, 3);
        assert_eq!(
            cart.items,
            vec![
                Item {
                    product_id: "b".into(),
                    quantity: 4
                },
                Item {
                    product_id: "a".into(),
                    quantity: 2
                }
            ],
            "quantities add up; first-added order kept"
        );
        assert!(!cart.cart_id.is_empty());

        let same = store.remove("u".into(), "zzz".into()).await.unwrap();
        assert_eq!(same.version, 3, "removing nothing changes nothing");
        assert!(store.add("u".into(), "a".into(), MAX_QUANTITY).await.is_err());

        // A checkout charged b x4 while a x2 -> a x5 happened meanwhile.
        assert!(store.open_checkout("k1", "u").await.unwrap());
        store.add("u".into(), "a".into(), 3).await.unwrap();
        let charged = vec![
            Item {
                product_id: "b".into(),
                quantity: 4,
            },
            Item {
                product_id: "a".into(),
                quantity: 2,
            },
        ];
        store.settle("u".into(), charged.clone(), "k1").await.unwrap();
        // A late retry of the same checkout (another replica, or the recovery)
        // settles again: the items do not leave twice.
        store.settle("u".into(), charged, "k1").await.unwrap();
        assert!(!store.open_checkout("k1", "u").await.unwrap(), "settled stays settled");
        assert!(!store.is_open("k1").await.unwrap());
        let after = store.get("u".into()).await.unwrap();
        assert_eq!(
            after.items,
            vec![Item {
                product_id: "a".into(),
                quantity: 3
            }]
        );
        assert_eq!(after.version, 5, "one settle, one bump");
        assert_eq!(after.cart_id, cart.cart_id, "the cart id lives on");
    }

    /// A cart.db from the build before PostgreSQL (STRICT tables, no position
    /// column, version 1 in `user_version`) is upgraded in place, items kept.
    #[tokio::test]
    async fn an_older_builds_database_is_upgraded_in_place() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cart.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut old = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE carts (user_id TEXT PRIMARY KEY, cart_id TEXT NOT NULL, version INTEGER NOT NULL) STRICT;
             CREATE TABLE cart_items (
                 user_id TEXT NOT NULL REFERENCES carts (user_id), product_id TEXT NOT NULL,
                 quantity INTEGER NOT NULL CHECK (quantity >= 1), PRIMARY KEY (user_id, product_id)
             ) STRICT;
             INSERT INTO carts VALUES ('u', 'c1', 4);
             INSERT INTO cart_items VALUES ('u', 'a', 2);
             PRAGMA user_version = 1;",
        )
        .execute(&mut old)
        .await
        .unwrap();
        old.close().await.unwrap();

        let store = Store::open(&Database::Sqlite(path)).await.unwrap();
        let cart = store.add("u".into(), "b".into(), 1).await.unwrap();
        assert_eq!((cart.cart_id.as_str(), cart.version), ("c1", 5));
        assert_eq!(
            cart.items,
            vec![
                Item {
                    product_id: "a".into(),
                    quantity: 2
                },
                Item {
                    product_id: "b".into(),
                    quantity: 1
                }
            ]
        );
    }

    /// The log of checkouts: stale ones are found oldest first, and a claim
    /// succeeds once per look, so two replicas never recover the same one at once.
    #[tokio::test]
    async fn stale_checkouts_are_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Database::Sqlite(dir.path().join("cart.db")))
            .await
            .unwrap();
        store.open_checkout("k1", "u").await.unwrap();
        store.open_checkout("k2", "v").await.unwrap();
        store.priced("k2", "0a01").await.unwrap();
        let future = now_millis() + 60_000;
        let stale = store.stale_checkouts(future, 10).await.unwrap();
        assert_eq!(stale.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(stale[1].charge.as_deref(), Some("0a01"));
        assert!(
            store
                .stale_checkouts(now_millis() - 60_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.claim(&stale[0]).await.unwrap());
        assert!(!store.claim(&stale[0]).await.unwrap(), "taken already");
        store.forget_checkout("k1").await.unwrap();
        assert!(!store.is_open("k1").await.unwrap());
        assert!(
            store.open_checkout("k1", "u").await.unwrap(),
            "a forgotten checkout starts again"
        );
    }
}
