//! The recovery: finishes or undoes checkouts that were left open, so what was
//! charged, what was sold and what is left agree even when a shopper never
//! retries. A checkout is left open when its answer from payments was lost, when
//! the cart process died midway, or when it ran past its limit.
//!
//! Every replica runs it; a checkout untouched for [`Settings::stale_after`]
//! (longer than any live checkout may run) is claimed by one of them and:
//! - if it was priced, its charge is sent again under the same idempotency key,
//!   which payments replays if it had committed (and otherwise makes now, as the
//!   shopper asked), and then it is confirmed and settled as a live one would be;
//!   a charge that payments refuses releases the stock instead; one confirmed
//!   too late (the hold ran out and the units were sold meanwhile) stays open,
//!   logged at every sweep, for a person to refund;
//! - if it never got as far as a charge, its stock reservation is released.
//!
//! A step that still fails leaves the checkout open for the next sweep. Its calls
//! carry no end user: the cart acts with its own mesh identity, as it does for
//! its own bookkeeping.

use meshwork_service_kit::time::now_millis;
use tonic::metadata::MetadataMap;

use crate::{
    Error,
    checkout::{self, logged_charge},
    db::{OpenCheckout, Store},
    peers::Peers,
    settings::Settings,
};

/// How many stale checkouts one sweep takes on.
const BATCH: i64 = 100;

/// Sweeps for stale checkouts for as long as the process runs.
pub fn spawn(store: Store, peers: Peers, settings: Settings) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.sweep_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let stale_after = i64::try_from(settings.stale_after().as_millis()).unwrap_or(i64::MAX);
            match sweep(&store, &peers, now_millis().saturating_sub(stale_after)).await {
                Ok(_) => {}
                Err(Error::Db(meshwork_service_kit::db::sqlx::Error::PoolClosed)) => return,
                Err(e) => tracing::warn!(error = %e, "cannot look for checkouts left open; will try again"),
            }
        }
    });
}

/// One sweep over the checkouts untouched since `before_ms`: how many it
/// settled or undid.
pub async fn sweep(store: &Store, peers: &Peers, before_ms: i64) -> Result<usize, Error> {
    let before = before_ms;
    let mut resolved = 0;
    for open in store.stale_checkouts(before, BATCH).await? {
        if !store.claim(&open).await? {
            continue;
        }
        match resolve(store, peers, &open).await {
            Ok(outcome) => {
                resolved += 1;
                tracing::info!(checkout = %open.key, user_id = %open.user_id, "{outcome}");
            }
            Err(e) => tracing::warn!(
                checkout = %open.key,
                error = %e,
                "a checkout left open could not be finished yet; will try again"
            ),
        }
    }
    Ok(resolved)
}

async fn resolve(store: &Store, peers: &Peers, open: &OpenCheckout) -> Result<String, Error> {
    let nobody = MetadataMap::new();
    let Some(charge) = open.charge.as_deref() else {
        peers.release(&nobody, &open.key).await?;
        store.forget_checkout(&open.key).await?;
        return Ok("checkout left open before its charge: stock reservation released".into());
    };
    let charge = logged_charge(charge)
        .ok_or_else(|| Error::Precondition(format!("the checkout log's charge for '{}' does not decode", open.key)))?;
    match checkout::finish(store, peers, &nobody, charge).await {
        Ok(order) => Ok(format!("checkout left open was finished: order {}", order.id)),
        // A refused charge was compensated, and the log forgot the checkout.
        Err(e) if !store.is_open(&open.key).await? => Ok(format!("checkout left open was undone: {e}")),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use meshwork_proto::{
        catalog::{ReservationRequest, StockItem, catalog_service_client::CatalogServiceClient},
        payments::{ListOrdersRequest, payment_service_client::PaymentServiceClient},
    };
    use meshwork_service_kit::testing::TestServer;
    use prost::Message;

    use super::*;
    use crate::{
        checkout::{charge_request_for_tests, idempotency_key},
        settings::HOLD,
        test_shop::shop,
    };

    async fn stock(peers: &Peers) -> i32 {
        peers.product(&MetadataMap::new(), "book-ddia").await.unwrap().stock
    }

    async fn orders(mesh: &TestServer, user: &str) -> usize {
        PaymentServiceClient::new(mesh.channel())
            .list_orders(ListOrdersRequest { user_id: user.into() })
            .await
            .unwrap()
            .into_inner()
            .orders
            .len()
    }

    /// The steps of a checkout up to its reservation, as the live path takes them.
    async fn reserve(store: &Store, peers: &Peers, user: &str) -> (String, Vec<meshwork_proto::catalog::Product>) {
        let cart = store.get(user.into()).await.unwrap();
        let key = idempotency_key(&cart);
        store.open_checkout(&key, user).await.unwrap();
        let items = vec![StockItem {
            product_id: "book-ddia".into(),
            quantity: 1,
        }];
        let products = peers.reserve(&MetadataMap::new(), &key, items, HOLD).await.unwrap();
        (key, products)
    }

    #[tokio::test]
    async fn a_charge_whose_answer_was_lost_is_confirmed_and_settled_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mesh, peers, store, user) = shop(dir.path()).await;
        let before = stock(&peers).await;
        let (key, products) = reserve(&store, &peers, &user).await;
        let cart = store.get(user.clone()).await.unwrap();
        let charge = charge_request_for_tests(&cart, &key, &products);
        store.priced(&key, &hex::encode(charge.encode_to_vec())).await.unwrap();
        // The charge commits; its answer never reaches the cart, and the shopper
        // does not try again.
        peers.charge(&MetadataMap::new(), charge).await.unwrap();

        // Nothing is stale yet: a live checkout may still be at it.
        assert_eq!(sweep(&store, &peers, now_millis() - 60_000).await.unwrap(), 0);
        assert_eq!(sweep(&store, &peers, now_millis() + 1).await.unwrap(), 1);
        assert_eq!(orders(&mesh, &user).await, 1, "the charge was replayed, not made again");
        assert!(
            store.get(user.clone()).await.unwrap().items.is_empty(),
            "the cart is settled"
        );
        assert!(!store.is_open(&key).await.unwrap());
        // The units are sold, not held: releasing the reservation gives nothing back.
        CatalogServiceClient::new(mesh.channel())
            .release_reservation(ReservationRequest {
                reservation_id: key.clone(),
            })
            .await
            .unwrap();
        assert_eq!(stock(&peers).await, before - 1);
        assert_eq!(
            sweep(&store, &peers, now_millis() + 1).await.unwrap(),
            0,
            "nothing left open"
        );
    }

    #[tokio::test]
    async fn a_checkout_that_died_before_its_charge_releases_its_stock() {
        let dir = tempfile::tempdir().unwrap();
        let (mesh, peers, store, user) = shop(dir.path()).await;
        let before = stock(&peers).await;
        let (key, _) = reserve(&store, &peers, &user).await;
        assert_eq!(stock(&peers).await, before - 1, "held");

        assert_eq!(sweep(&store, &peers, now_millis() + 1).await.unwrap(), 1);
        assert_eq!(
            stock(&peers).await,
            before,
            "released at once, not when the hold runs out"
        );
        assert_eq!(orders(&mesh, &user).await, 0);
        assert!(!store.is_open(&key).await.unwrap());
        assert_eq!(store.get(user).await.unwrap().items.len(), 1, "the cart is as it was");
    }
}
