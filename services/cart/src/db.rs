//! Carts in `cart.db` (SQLite) or the service's PostgreSQL database, the same SQL for
//! both: one row per user with a random cart id and a version that is bumped on every
//! change, and the items. The (cart id, version) pair names the exact contents a
//! checkout charged, which is what makes its idempotency key.
//!
//! Every change locks the cart's row before it touches the items (by bumping it, or
//! `FOR UPDATE` on PostgreSQL; SQLite's write transaction holds the whole file), so
//! changes to one cart from any replica happen one after the other.

use meshwork_service_kit::db::{self, Conn, Database, Db, Sql, sqlx};

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

    /// After a successful charge: takes the charged items out of the cart and bumps the
    /// version. Subtracting rather than clearing keeps anything added while the
    /// checkout ran, which was not charged.
    pub async fn settle(&self, user_id: String, charged: Vec<Item>) -> Result<(), Error> {
        let mut tx = self.db.write().await?;
        sqlx::query(self.db.sql(&LOCK_CART))
            .bind(&user_id)
            .fetch_optional(&mut *tx)
            .await?;
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
        store.add("u".into(), "a".into(), 3).await.unwrap();
        store
            .settle(
                "u".into(),
                vec![
                    Item {
                        product_id: "b".into(),
                        quantity: 4,
                    },
                    Item {
                        product_id: "a".into(),
                        quantity: 2,
                    },
                ],
            )
            .await
            .unwrap();
        let after = store.get("u".into()).await.unwrap();
        assert_eq!(
            after.items,
            vec![Item {
                product_id: "a".into(),
                quantity: 3
            }]
        );
        assert_eq!(after.version, 5);
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
}
