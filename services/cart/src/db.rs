//! Carts in `cart.db`: one row per user with a random cart id and a version that is
//! bumped on every change, and the items. The (cart id, version) pair names the exact
//! contents a checkout charged, which is what makes its idempotency key.

use std::path::Path;

use meshwork_service_kit::db::{self, Db, rusqlite};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::{Error, validate::MAX_QUANTITY};

const MIGRATIONS: &[&str] = &["
CREATE TABLE carts (
    user_id TEXT PRIMARY KEY,
    -- Random and fixed for the cart's life, so a cart made again after its database
    -- was lost never repeats an old cart's idempotency keys.
    cart_id TEXT NOT NULL,
    version INTEGER NOT NULL
) STRICT;
CREATE TABLE cart_items (
    user_id    TEXT NOT NULL REFERENCES carts (user_id),
    product_id TEXT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity >= 1),
    PRIMARY KEY (user_id, product_id)
) STRICT;
"];

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

fn read(c: &rusqlite::Connection, user_id: &str) -> rusqlite::Result<CartRow> {
    let head: Option<(String, i64)> = c
        .query_row(
            "SELECT cart_id, version FROM carts WHERE user_id = ?1",
            [user_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (cart_id, version) = head.unwrap_or_default();
    // rowid order is insertion order: a quantity update keeps the row.
    let mut stmt = c.prepare_cached("SELECT product_id, quantity FROM cart_items WHERE user_id = ?1 ORDER BY rowid")?;
    let items = stmt
        .query_map([user_id], |r| {
            Ok(Item {
                product_id: r.get(0)?,
                quantity: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(CartRow {
        user_id: user_id.to_owned(),
        cart_id,
        version,
        items,
    })
}

fn bump(tx: &Transaction<'_>, user_id: &str) -> rusqlite::Result<()> {
    tx.execute("UPDATE carts SET version = version + 1 WHERE user_id = ?1", [user_id])?;
    Ok(())
}

impl Store {
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Store {
            db: db::open(path, MIGRATIONS).await?,
        })
    }

    pub async fn get(&self, user_id: String) -> Result<CartRow, Error> {
        self.db.call(move |c| Ok(read(c, &user_id)?)).await
    }

    /// Adds `quantity` units (to any already there).
    pub async fn add(&self, user_id: String, product_id: String, quantity: i32) -> Result<CartRow, Error> {
        self.db
            .call(move |c| {
                let tx = db::write(c)?;
                tx.execute(
                    "INSERT INTO carts (user_id, cart_id, version) VALUES (?1, ?2, 0) ON CONFLICT (user_id) DO NOTHING",
                    params![user_id, uuid::Uuid::new_v4().to_string()],
                )?;
                let have: i32 = tx
                    .query_row(
                        "SELECT quantity FROM cart_items WHERE user_id = ?1 AND product_id = ?2",
                        params![user_id, product_id],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(0);
                let total = have.saturating_add(quantity);
                if total > MAX_QUANTITY {
                    return Err(Error::invalid(
                        "quantity",
                        format!("would make {total} of '{product_id}' in the cart, more than {MAX_QUANTITY}"),
                    ));
                }
                tx.execute(
                    "INSERT INTO cart_items (user_id, product_id, quantity) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = excluded.quantity",
                    params![user_id, product_id, total],
                )?;
                bump(&tx, &user_id)?;
                let cart = read(&tx, &user_id)?;
                tx.commit()?;
                Ok(cart)
            })
            .await
    }

    /// Removes the product whatever its quantity; removing what is not there changes
    /// nothing (not even the version).
    pub async fn remove(&self, user_id: String, product_id: String) -> Result<CartRow, Error> {
        self.db
            .call(move |c| {
                let tx = db::write(c)?;
                let removed = tx.execute(
                    "DELETE FROM cart_items WHERE user_id = ?1 AND product_id = ?2",
                    params![user_id, product_id],
                )?;
                if removed > 0 {
                    bump(&tx, &user_id)?;
                }
                let cart = read(&tx, &user_id)?;
                tx.commit()?;
                Ok(cart)
            })
            .await
    }

    /// After a successful charge: takes the charged items out of the cart and bumps the
    /// version. Subtracting rather than clearing keeps anything added while the
    /// checkout ran, which was not charged.
    pub async fn settle(&self, user_id: String, charged: Vec<Item>) -> Result<(), Error> {
        self.db
            .call(move |c| {
                let tx = db::write(c)?;
                for item in &charged {
                    let have: Option<i32> = tx
                        .query_row(
                            "SELECT quantity FROM cart_items WHERE user_id = ?1 AND product_id = ?2",
                            params![user_id, item.product_id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    match have {
                        Some(have) if have > item.quantity => {
                            tx.execute(
                                "UPDATE cart_items SET quantity = ?3 WHERE user_id = ?1 AND product_id = ?2",
                                params![user_id, item.product_id, have - item.quantity],
                            )?;
                        }
                        Some(_) => {
                            tx.execute(
                                "DELETE FROM cart_items WHERE user_id = ?1 AND product_id = ?2",
                                params![user_id, item.product_id],
                            )?;
                        }
                        None => {}
                    }
                }
                bump(&tx, &user_id)?;
                tx.commit()?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_and_settling() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cart.db")).await.unwrap();
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
}
