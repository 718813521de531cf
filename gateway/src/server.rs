//! The public listener: TCP, then TLS when configured (ALPN picks HTTP/2
//! or HTTP/1.1), else plaintext (HTTP/2 by prior knowledge, or HTTP/1.1),
//! one port for every protocol. Bounded everywhere: open connections,
//! streams per connection, header size and count (431, from hyper), and the
//! time a client has to send its request headers: a slow HTTP/1.1 client
//! gets 408 and is closed; a TLS handshake or an HTTP/2 preface that does
//! not arrive in time is closed.

use std::{sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use meshwork_config::{Cors, Limits};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::{Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    GatewayError,
    edge::{self, Shared},
};

/// The answer to a client too slow to send its headers.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Accepts connections until `stop` turns true, then lets open ones finish
/// their requests (graceful shutdown).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    cors: &Cors,
    mut stop: watch::Receiver<bool>,
) {
    let limits = shared.limits.clone();
    let cors = cors_layer(cors);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, not spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let (tls, cors, limits, stop) = (tls.clone(), cors.clone(), limits.clone(), stop.clone());
        tokio::spawn(async move {
            shared.metrics.open_connections.inc();
            let service = ServiceBuilder::new().layer(cors).service(tower::service_fn({
                let shared = shared.clone();
                move |request| edge::handle(shared.clone(), request, peer)
            }));
            match tls {
                None => connection(tcp, service, &limits, stop).await,
                Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => connection(stream, service, &limits, stop).await,
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake took too long"),
                },
            }
            shared.metrics.open_connections.dec();
            drop(permit);
        });
    }
}

/// Serves one connection with the limits; a client that does not send its
/// request headers in time gets 408.
async fn connection<IO, S, B>(io: IO, service: S, limits: &Limits, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(20)));
    let (io, rescue) = SharedIo::new(io);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        let timed_out = error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if timed_out {
            rescue.answer(REQUEST_TIMEOUT).await;
        } else {
            tracing::debug!(%error, "connection ended with an error");
        }
    }
}

fn cors_layer(cors: &Cors) -> CorsLayer {
    let origins = if cors.origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(cors.origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            http::Method::GET,
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ])
        .allow_headers(
            cors.headers
                .iter()
                .filter_map(|h| h.parse::<http::HeaderName>().ok())
                .collect::<Vec<_>>(),
        )
        .expose_headers([
            http::HeaderName::from_static("grpc-status"),
            http::HeaderName::from_static("grpc-message"),
            http::HeaderName::from_static("grpc-status-details-bin"),
            http::header::WWW_AUTHENTICATE,
        ])
        .max_age(cors.max_age)
}

pin_project_lite::pin_project! {
    /// The connection's stream, shared with its rescuer: hyper owns it while
    /// serving, and once hyper gives up on a slow client the rescuer can
    /// still write that client its 408. The lock is never contended (only
    /// one side uses it at a time).
    struct SharedIo<IO> {
        inner: Arc<tokio::sync::Mutex<IO>>,
    }
}

struct Rescue<IO>(Arc<tokio::sync::Mutex<IO>>);

impl<IO: AsyncWrite + Unpin> SharedIo<IO> {
    fn new(io: IO) -> (Self, Rescue<IO>) {
        let inner = Arc::new(tokio::sync::Mutex::new(io));
        (SharedIo { inner: inner.clone() }, Rescue(inner))
    }
}

impl<IO: AsyncWrite + Unpin> Rescue<IO> {
    async fn answer(self, bytes: &[u8]) {
        let mut io = self.0.lock().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = io.write_all(bytes).await;
            let _ = io.shutdown().await;
        })
        .await;
    }
}

/// Runs `f` on the stream; the lock is free whenever hyper polls.
fn with<IO, T>(
    shared: &Arc<tokio::sync::Mutex<IO>>,
    f: impl FnOnce(&mut IO) -> std::task::Poll<T>,
) -> std::task::Poll<T> {
    match shared.try_lock() {
        Ok(mut io) => f(&mut io),
        // Only the rescuer takes it, after hyper has let go of the stream.
        Err(_) => std::task::Poll::Pending,
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SharedIo<IO> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        with(&self.inner, |io| std::pin::Pin::new(io).poll_read(cx, buf))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SharedIo<IO> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        with(&self.inner, |io| std::pin::Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        with(&self.inner, |io| std::pin::Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        with(&self.inner, |io| std::pin::Pin::new(io).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        with(&self.inner, |io| std::pin::Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

/// A TLS acceptor for the gateway's certificate and key (PEM files),
/// offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, GatewayError> {
    let fail = |file: &std::path::Path, reason: String| GatewayError::Tls {
        file: file.to_path_buf(),
        reason,
    };
    let open = |file: &std::path::Path| {
        std::fs::File::open(file)
            .map(std::io::BufReader::new)
            .map_err(|e| fail(file, format!("cannot open: {e}")))
    };
    let certs = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(fail(cert, "holds no certificate".into()));
    }
    let private_key = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|e| fail(key, format!("not a PEM private key: {e}")))?
        .ok_or_else(|| fail(key, "holds no private key".into()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| fail(cert, format!("does not make a TLS identity with its key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
