//! The one way every `mesh` process learns it should stop: SIGTERM or Ctrl-C.
//! (The lean `mesh-proxy` binary includes this file too, so that it does
//! not link the service kit, which has its own for the apps.)

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGTERM or SIGINT received after this call.
///
/// The handlers are installed here, not when the future is first polled:
/// until then SIGTERM's default action would kill the process without
/// stopping what it started. Call it first thing, inside the runtime.
pub fn terminated() -> impl Future<Output = ()> + Send + 'static {
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers there is nothing to wait for; never
            // resolve rather than stop at once.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
