//! The gateway's admin port (loopback): `/live`, `/ready` (once it serves
//! and its first method table is built) and `/metrics` in the Prometheus
//! text format.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch};

#[derive(Clone)]
struct Admin {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
}

pub async fn serve(listener: TcpListener, registry: Registry, ready: Arc<AtomicBool>, mut stop: watch::Receiver<bool>) {
    let state = Admin {
        registry: Arc::new(registry),
        ready,
    };
    let app = Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready_handler))
        .route("/metrics", get(metrics))
        .with_state(state);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
}

async fn ready_handler(State(admin): State<Admin>) -> impl IntoResponse {
    if admin.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting\n")
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let mut text = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut text, &admin.registry).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            String::new(),
        );
    }
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
