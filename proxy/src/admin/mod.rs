//! The admin listener (HTTP/1.1, loopback): `/live` while the process runs,
//! `/ready` once the sidecar can carry traffic, `/metrics` for Prometheus.

mod metrics;
mod ready;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};

pub use ready::{Readiness, probe};

use crate::{options::Settings, serve::serve, shutdown::Shutdown};

/// Admin connections are few (probes, scrapes); a small bound suffices.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// What the admin endpoints report on.
struct State {
    readiness: Readiness,
    /// Every metric family of the sidecar, registered while it started.
    registry: Arc<Registry>,
}

pub async fn run(
    sidecar: &str,
    listener: TcpListener,
    readiness: Readiness,
    registry: Arc<Registry>,
    settings: &Settings,
    shutdown: Shutdown,
) {
    let label: Arc<str> = format!("{sidecar} admin").into();
    let state = Arc::new(State { readiness, registry });
    serve(
        label,
        listener,
        MAX_ADMIN_CONNECTIONS,
        settings.drain_grace,
        shutdown,
        None,
        move |stream, peer, shutdown| connection(state.clone(), stream, peer, shutdown),
    )
    .await;
}

async fn connection(state: Arc<State>, stream: TcpStream, peer: SocketAddr, mut shutdown: Shutdown) {
    let service = hyper::service::service_fn(move |req| {
        let rsp = answer(&state, &req);
        async move { Ok::<_, Infallible>(rsp) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Slow or stuck clients must not hold a connection forever.
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = shutdown.requested() => {
            // Finish the response in progress, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%peer, %error, "admin connection ended with an error");
    }
}

fn answer(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n".into()),
        "/ready" => match state.readiness.state() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
        },
        "/metrics" => metrics::answer(&state.registry),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}
