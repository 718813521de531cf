//! Connecting to a peer sidecar: TCP with a timeout, then TLS presenting our
//! certificate and checking the peer's SPIFFE ID, negotiating HTTP/2.
//! An endpoint's forwarder calls this when it needs a new connection.

use std::{future::Future, io, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use rustls::{ClientConfig, pki_types::ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::destination::{Destination, ServiceName};
use crate::{
    connection::{BoxError, Connect},
    error::io_reason,
    identity::{IdentityMismatch, handshake_failure_reason},
    param::Param,
    telemetry::{Direction, Telemetry},
};

/// Why a connection to a peer could not be made. Its text is the reason a
/// caller reads in the `UNAVAILABLE` message.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A short reason, which a caller reads; the OS error is not repeated
    /// as `source()`.
    #[error("{}", io_reason(.0))]
    Tcp(io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    /// Most often the peer's identity was not the expected one.
    #[error("{0}")]
    Tls(String),
    #[error("the peer did not negotiate HTTP/2")]
    NotHttp2,
}

/// Cloned for every connect, so its parts sit behind one `Arc`.
#[derive(Clone)]
pub struct MtlsConnector(Arc<Inner>);

struct Inner {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    /// Refused handshakes are counted, as on the inbound side.
    telemetry: Telemetry,
}

impl MtlsConnector {
    pub fn new(
        destination: &Destination,
        tls: Arc<ClientConfig>,
        connect_timeout: Duration,
        handshake_timeout: Duration,
        telemetry: Telemetry,
    ) -> Self {
        let ServiceName(name) = destination.param();
        // Workload names are DNS labels (the configuration checks), so this
        // holds; the fallback only keeps the name well-formed. The verifier
        // checks the SPIFFE ID, not this name.
        let server_name = ServerName::try_from(name.to_string())
            .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        MtlsConnector(Arc::new(Inner {
            addr: destination.param(),
            server_name,
            tls: TlsConnector::from(tls),
            connect_timeout,
            handshake_timeout,
            telemetry,
        }))
    }

    async fn handshake(self) -> Result<TlsStream<TcpStream>, ConnectError> {
        let this = &*self.0;
        let tcp = tokio::time::timeout(this.connect_timeout, TcpStream::connect(this.addr))
            .await
            .map_err(|_| ConnectError::ConnectTimeout(this.connect_timeout))?
            .map_err(ConnectError::Tcp)?;
        let _ = tcp.set_nodelay(true);
        let tls =
            match tokio::time::timeout(this.handshake_timeout, this.tls.connect(this.server_name.clone(), tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    this.telemetry
                        .tls_failure(Direction::Outbound, handshake_failure_reason(&error));
                    return Err(ConnectError::Tls(tls_reason(&error)));
                }
                Err(_) => {
                    this.telemetry.tls_failure(Direction::Outbound, "timeout");
                    return Err(ConnectError::HandshakeTimeout(this.handshake_timeout));
                }
            };
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ConnectError::NotHttp2);
        }
        Ok(tls)
    }
}

/// The handshake failure in words: our verifier's identity mismatch as it
/// is, other rustls errors with a prefix.
fn tls_reason(error: &io::Error) -> String {
    let rustls_error = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            match other.0.downcast_ref::<IdentityMismatch>() {
                Some(mismatch) => mismatch.to_string(),
                None => format!("TLS handshake failed: invalid peer certificate: {}", other.0),
            }
        }
        Some(e) => format!("TLS handshake failed: {e}"),
        None => format!("TLS handshake failed: {}", io_reason(error)),
    }
}

impl Connect for MtlsConnector {
    type Io = TlsStream<TcpStream>;

    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Self::Io, BoxError>> + Send>> {
        // Boxed once per new connection, not per call.
        let this = self.clone();
        Box::pin(async move { this.handshake().await.map_err(BoxError::from) })
    }
}
