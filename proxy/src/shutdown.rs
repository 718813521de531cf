//! One shutdown signal shared by every listener and background task.

use tokio::sync::watch;

/// Starts the shutdown of everything holding a [`Shutdown`].
pub struct Trigger(watch::Sender<bool>);

/// Resolves once shutdown has been triggered (or the trigger dropped).
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    pub async fn requested(&mut self) {
        // An error means the trigger is gone, which also means: stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
