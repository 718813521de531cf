//! Checkout, the one real flow through the mesh, as a saga across catalog and
//! payments: cart -> users (does the buyer exist) -> catalog (reserve the units,
//! which answers with current prices) -> payments (charge with a key derived from
//! the cart's exact contents) -> catalog (confirm the reservation) -> take the
//! charged items out of the cart. A charge that surely failed releases the
//! reservation (compensation). Each step is first written to the checkout log, so
//! a checkout whose outcome is unknown (the answer was lost, the cart died, the
//! time ran out) is finished or undone by the [recovery](crate::recovery) even if
//! its shopper never retries.
//!
//! Retrying is safe: until the cart is settled its (cart id, version) is unchanged, so
//! a retried checkout sends the same idempotency key, the catalog replays the
//! reservation and payments replays the first charge instead of charging again.

use meshwork_proto::{
    catalog::{Product, StockItem},
    common::Money,
    payments::{ChargeRequest, Order, OrderLine},
};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Code, Status, metadata::MetadataMap};

use crate::{
    Error,
    db::{CartRow, Item, Store},
    peers::Peers,
    settings::Settings,
};

/// A checkout bounded by `settings.checkout_limit`: past it the checkout stops
/// where it is, and the recovery, which waits longer than that, takes over.
pub async fn checkout(
    store: &Store,
    peers: &Peers,
    settings: &Settings,
    inbound: &MetadataMap,
    user_id: String,
) -> Result<Order, Error> {
    tokio::time::timeout(settings.checkout_limit, run(store, peers, settings, inbound, user_id))
        .await
        .unwrap_or(Err(Error::OutOfTime(settings.checkout_limit)))
}

async fn run(
    store: &Store,
    peers: &Peers,
    settings: &Settings,
    inbound: &MetadataMap,
    user_id: String,
) -> Result<Order, Error> {
    let cart = store.get(user_id.clone()).await?;
    if cart.items.is_empty() {
        return Err(Error::EmptyCart);
    }
    peers.user(inbound, &user_id, "checkout").await?;
    let key = idempotency_key(&cart);
    // A retry of a checkout that settled meanwhile replays each step and settles nothing.
    store.open_checkout(&key, &user_id).await?;
    let items = cart
        .items
        .iter()
        .map(|i| StockItem {
            product_id: i.product_id.clone(),
            quantity: i.quantity,
        })
        .collect();
    let products = match peers.reserve(inbound, &key, items, settings.hold).await {
        Ok(products) => products,
        Err(e) => {
            // Refused: nothing is held. Otherwise the recovery releases what may be.
            if surely_not_done(&e) {
                store.forget_checkout(&key).await?;
            }
            return Err(e);
        }
    };
    let charge = match charge_request(&cart, &key, &products) {
        Ok(charge) => charge,
        Err(e) => {
            compensate(store, peers, inbound, &key, &e).await;
            return Err(e);
        }
    };
    store.priced(&key, &hex::encode(charge.encode_to_vec())).await?;
    finish(store, peers, inbound, charge).await
}

/// The steps after pricing, which the recovery repeats for a checkout left open:
/// charge (or replay the charge), confirm the reservation, settle the cart.
pub async fn finish(
    store: &Store,
    peers: &Peers,
    inbound: &MetadataMap,
    charge: ChargeRequest,
) -> Result<Order, Error> {
    let key = charge.idempotency_key.clone();
    let user_id = charge.user_id.clone();
    let charged_items = charge
        .lines
        .iter()
        .map(|l| Item {
            product_id: l.product_id.clone(),
            quantity: l.quantity,
        })
        .collect();
    let response = match peers.charge(inbound, charge).await {
        Ok(response) => response,
        Err(e) => {
            // A lost answer (UNAVAILABLE, DEADLINE_EXCEEDED, ...) may hide a
            // committed charge: the reservation stays for a retry or the recovery.
            if surely_not_done(&e) {
                compensate(store, peers, inbound, &key, &e).await;
            }
            return Err(e);
        }
    };
    let order = response.order.ok_or_else(|| Error::Peer {
        step: "checkout: charging through payments".into(),
        status: Status::internal("payments answered without an order"),
    })?;
    if response.replayed {
        tracing::info!(order_id = %order.id, "checkout retried; payments replayed the first charge");
    }
    peers.confirm(inbound, &key).await?;
    store.settle(user_id, charged_items, &key).await?;
    tracing::info!(order_id = %order.id, "checked out");
    Ok(order)
}

/// Decodes a priced charge from the checkout log.
pub fn logged_charge(hex_text: &str) -> Option<ChargeRequest> {
    ChargeRequest::decode(hex::decode(hex_text).ok()?.as_slice()).ok()
}

/// Whether a step's error means the step was not done: refused by the peer, or
/// never sent. A lost answer (UNAVAILABLE, DEADLINE_EXCEEDED, ...) may hide a
/// committed step.
pub fn surely_not_done(e: &Error) -> bool {
    match e {
        Error::Peer { status, .. } => matches!(
            status.code(),
            Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::NotFound
                | Code::OutOfRange
                | Code::ResourceExhausted
        ),
        _ => true,
    }
}

/// Releases the reservation after a failed charge and forgets the checkout; if the
/// release fails, the checkout stays in the log for the recovery to release.
pub async fn compensate(store: &Store, peers: &Peers, inbound: &MetadataMap, key: &str, why: &Error) {
    match peers.release(inbound, key).await {
        Ok(()) => {
            tracing::info!(reason = %why, "checkout failed; stock reservation released");
            if let Err(e) = store.forget_checkout(key).await {
                tracing::warn!(error = %e, "cannot forget a released checkout; the recovery will");
            }
        }
        Err(e) => tracing::warn!(
            reason = %why,
            error = %e,
            "checkout failed and the stock reservation could not be released; the recovery will"
        ),
    }
}

/// The idempotency key of a checkout of exactly this cart: sha256 (hex) of the user,
/// the cart's random id and its version. Any change to the cart bumps the version,
/// so new contents get a new key and the same contents the same key.
pub fn idempotency_key(cart: &CartRow) -> String {
    let material = format!(
        "meshwork-cart/checkout/v1\n{}\n{}\n{}",
        cart.user_id, cart.cart_id, cart.version
    );
    hex::encode(Sha256::digest(material.as_bytes()))
}

/// Prices the cart with the catalog's answer to the reservation (one product per
/// item, same order; the stock is already held, so it is not checked here).
fn charge_request(cart: &CartRow, key: &str, products: &[Product]) -> Result<ChargeRequest, Error> {
    let catalog_error = |why: String| Error::Peer {
        step: "checkout: pricing the cart with the catalog".into(),
        status: Status::internal(why),
    };
    if products.len() != cart.items.len() {
        return Err(catalog_error(format!(
            "asked for {} products, got {}",
            cart.items.len(),
            products.len()
        )));
    }
    let mut currency: Option<&str> = None;
    let mut total: i64 = 0;
    let mut lines = Vec::with_capacity(products.len());
    for (item, product) in cart.items.iter().zip(products) {
        if product.id != item.product_id {
            return Err(catalog_error(format!(
                "asked for '{}', got '{}'",
                item.product_id, product.id
            )));
        }
        let price = product
            .price
            .as_ref()
            .ok_or_else(|| catalog_error(format!("no price for '{}'", product.id)))?;
        match currency {
            None => currency = Some(&price.currency_code),
            Some(c) if c != price.currency_code => {
                return Err(Error::Precondition(format!(
                    "the cart mixes currencies ({c} and {}); one currency per order",
                    price.currency_code
                )));
            }
            Some(_) => {}
        }
        total = price
            .amount_minor
            .checked_mul(i64::from(item.quantity))
            .and_then(|amount| total.checked_add(amount))
            .ok_or_else(|| Error::Precondition("the cart's total is too large".into()))?;
        lines.push(OrderLine {
            product_id: product.id.clone(),
            name: product.name.clone(),
            quantity: item.quantity,
            unit_price: Some(price.clone()),
        });
    }
    Ok(ChargeRequest {
        idempotency_key: key.to_owned(),
        user_id: cart.user_id.clone(),
        lines,
        total: Some(Money {
            amount_minor: total,
            currency_code: currency.unwrap_or("USD").to_owned(),
        }),
    })
}

/// [`charge_request`] for other modules' tests.
#[cfg(test)]
pub fn charge_request_for_tests(cart: &CartRow, key: &str, products: &[Product]) -> ChargeRequest {
    charge_request(cart, key, products).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::HOLD;

    fn cart(version: i64) -> CartRow {
        CartRow {
            user_id: "u1".into(),
            cart_id: "c1".into(),
            version,
            items: vec![
                Item {
                    product_id: "a".into(),
                    quantity: 2,
                },
                Item {
                    product_id: "b".into(),
                    quantity: 1,
                },
            ],
        }
    }

    fn product(id: &str, price: i64, currency: &str, stock: i32) -> Product {
        Product {
            id: id.into(),
            name: id.to_uppercase(),
            price: Some(Money {
                amount_minor: price,
                currency_code: currency.into(),
            }),
            stock,
            ..Default::default()
        }
    }

    #[test]
    fn keys_follow_the_cart_version() {
        assert_eq!(idempotency_key(&cart(3)), idempotency_key(&cart(3)));
        assert_ne!(idempotency_key(&cart(3)), idempotency_key(&cart(4)));
        let mut other = cart(3);
        other.cart_id = "c2".into();
        assert_ne!(idempotency_key(&cart(3)), idempotency_key(&other));
        assert_eq!(idempotency_key(&cart(3)).len(), 64);
    }

    #[test]
    fn prices_the_cart() {
        let req = charge_request(
            &cart(1),
            "k",
            &[product("a", 250, "USD", 5), product("b", 100, "USD", 1)],
        )
        .unwrap();
        assert_eq!(
            req.total,
            Some(Money {
                amount_minor: 600,
                currency_code: "USD".into()
            })
        );
        assert_eq!(req.lines.len(), 2);

        assert_eq!(req.idempotency_key, "k");
        let err = charge_request(
            &cart(1),
            "k",
            &[product("a", 250, "USD", 5), product("b", 100, "EUR", 1)],
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Precondition(m) if m.contains("currencies")),
            "{err}"
        );
        let err = charge_request(&cart(1), "k", &[product("a", 250, "USD", 5)]).unwrap_err();
        assert!(matches!(err, Error::Peer { .. }));
    }

    #[tokio::test]
    async fn a_retry_after_the_charge_committed_replays_it() {
        use meshwork_proto::payments::ListOrdersRequest;

        let dir = tempfile::tempdir().unwrap();
        let (mesh, peers, store, user) = crate::test_shop::shop(dir.path()).await;
        let md = MetadataMap::new();

        // A first attempt charged, then died before it could settle the cart.
        let cart = store.get(user.clone()).await.unwrap();
        let stock = || async { peers.product(&md, "book-ddia").await.unwrap().stock };
        let before = stock().await;
        let key = idempotency_key(&cart);
        let items = vec![StockItem {
            product_id: "book-ddia".into(),
            quantity: 1,
        }];
        store.open_checkout(&key, &user).await.unwrap();
        let products = peers.reserve(&md, &key, items, HOLD).await.unwrap();
        let first = peers
            .charge(&md, charge_request(&cart, &key, &products).unwrap())
            .await
            .unwrap();
        assert!(!first.replayed);

        // The retry replays that charge instead of making a second order.
        let order = checkout(&store, &peers, &Settings::default(), &md, user.clone())
            .await
            .unwrap();
        assert_eq!(Some(&order), first.order.as_ref());
        assert!(store.get(user.clone()).await.unwrap().items.is_empty());
        assert_eq!(
            stock().await,
            before - 1,
            "the reservation was replayed, not made twice"
        );
        let orders = meshwork_proto::payments::payment_service_client::PaymentServiceClient::new(mesh.channel())
            .list_orders(ListOrdersRequest { user_id: user })
            .await
            .unwrap()
            .into_inner()
            .orders;
        assert_eq!(orders.len(), 1);
    }
}
