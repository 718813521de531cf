//! WatchProducts: one task per watcher that sends the current state of the products
//! asked for, then each committed change to them, until the watcher hangs up.
//!
//! Backpressure: the per-watcher queue is small, so a slow watcher soon stops taking
//! changes from the broadcast; when the broadcast overflows for it (it "lags") it is
//! resynchronised with the latest state from the table instead of getting an error.
//! Revisions make sure a watcher never gets a state older than one it already has.

use std::collections::{HashMap, HashSet};

use meshwork_proto::catalog::ProductUpdate;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tonic::Status;

use crate::{
    Error,
    db::{ProductRow, Store},
    prices::Pricing,
};

/// Updates queued per watcher before its task waits for the client.
const WATCH_BUFFER: usize = 16;

pub type Updates = mpsc::Receiver<Result<ProductUpdate, Status>>;

/// Starts watching `ids` (validated, possibly with repeats), priced by `pricing`.
/// NOT_FOUND before any message if one of them does not exist.
pub async fn start(store: &Store, ids: Vec<String>, pricing: Pricing) -> Result<Updates, Error> {
    // Subscribe before reading the current state, so no change falls in between.
    let changes = store.subscribe();
    let initial = store.get_many(ids.clone()).await?;
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let watcher = Watcher {
        store: store.clone(),
        wanted: ids.iter().cloned().collect(),
        ids,
        sent: HashMap::new(),
        pricing,
        tx,
    };
    tokio::spawn(watcher.run(initial, changes));
    Ok(rx)
}

struct Watcher {
    store: Store,
    ids: Vec<String>,
    wanted: HashSet<String>,
    /// The revision last sent for each product.
    sent: HashMap<String, i64>,
    pricing: Pricing,
    tx: mpsc::Sender<Result<ProductUpdate, Status>>,
}

impl Watcher {
    async fn run(mut self, initial: Vec<ProductRow>, mut changes: tokio::sync::broadcast::Receiver<ProductRow>) {
        for row in initial {
            if !self.send_if_newer(row).await {
                return;
            }
        }
        loop {
            let change = tokio::select! {
                () = self.tx.closed() => return,
                change = changes.recv() => change,
            };
            let alive = match change {
                Ok(row) if self.wanted.contains(&row.id) => self.send_if_newer(row).await,
                Ok(_) => true,
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "product watcher lagged; resending the latest state");
                    self.resync().await
                }
                // The store (and so the service) is gone.
                Err(RecvError::Closed) => false,
            };
            if !alive {
                return;
            }
        }
    }

    async fn resync(&mut self) -> bool {
        match self.store.get_many(self.ids.clone()).await {
            Ok(rows) => {
                for row in rows {
                    if !self.send_if_newer(row).await {
                        return false;
                    }
                }
                true
            }
            Err(e) => {
                let _ = self.tx.send(Err(e.into())).await;
                false
            }
        }
    }

    /// Sends `row` unless the watcher already has that revision or a newer one;
    /// false once the watcher has hung up.
    async fn send_if_newer(&mut self, row: ProductRow) -> bool {
        if self.sent.get(&row.id).is_some_and(|&revision| revision >= row.revision) {
            return true;
        }
        self.sent.insert(row.id.clone(), row.revision);
        self.tx
            .send(Ok(ProductUpdate {
                product: Some(self.pricing.show(row)),
            }))
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Update;

    #[tokio::test]
    async fn a_lagging_watcher_gets_the_latest_state_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&meshwork_service_kit::Database::Sqlite(dir.path().join("catalog.db")))
            .await
            .unwrap();
        let mut updates = start(&store, vec!["toys-kite".into(), "toys-kite".into()], Pricing::stored())
            .await
            .unwrap();
        let initial = updates.recv().await.unwrap().unwrap().product.unwrap();
        assert_eq!(
            initial.stock, 21,
            "the seeded state first, once despite the repeated id"
        );

        // Far more changes than the watcher's queue and the broadcast buffer hold,
        // while nobody reads: the watcher lags.
        let changes = 600;
        for stock in 1..=changes {
            store
                .update(
                    "toys-kite".into(),
                    Update {
                        price: None,
                        stock: Some(stock),
                    },
                )
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        while seen.last() != Some(&changes) {
            let update = tokio::time::timeout(std::time::Duration::from_secs(5), updates.recv())
                .await
                .expect("the latest state arrives")
                .expect("stream open")
                .expect("no error after lagging");
            seen.push(update.product.unwrap().stock);
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "never an older state: {seen:?}");
        assert!(
            seen.len() < changes as usize,
            "intermediate states were skipped ({} seen)",
            seen.len()
        );
    }

    #[tokio::test]
    async fn the_task_ends_when_the_watcher_hangs_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&meshwork_service_kit::Database::Sqlite(dir.path().join("catalog.db")))
            .await
            .unwrap();
        let updates = start(&store, vec!["toys-kite".into()], Pricing::stored())
            .await
            .unwrap();
        assert_eq!(store.changes.receiver_count(), 1);
        drop(updates);
        for _ in 0..100 {
            if store.changes.receiver_count() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("watcher task still subscribed after the watcher hung up");
    }
}
