//! The inbound side: peers' sidecars connect here over mTLS. A connection is
//! accepted only with a client certificate from the mesh CA carrying a
//! SPIFFE ID of our trust domain; its calls then go through the inbound stack
//! (server span and metrics, authorize, forward to the app). Refused
//! handshakes are counted by reason in `meshwork_tls_handshake_failures_total`.

mod app;
mod authorize;
mod stack;

use std::{net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

pub use authorize::Caller;
pub use stack::InboundStack;

use crate::{
    identity::{Identity, handshake_failure_reason, workload_of},
    options::Settings,
    serve::serve,
    server::Http2Server,
    shutdown::Shutdown,
    telemetry::Direction,
};

/// Serves the inbound listener until shutdown.
pub async fn run(
    sidecar: &str,
    listener: TcpListener,
    identity: &Identity,
    stack: InboundStack,
    settings: &Settings,
    shutdown: Shutdown,
) {
    let acceptor = match crate::identity::server_config(identity) {
        Ok(config) => TlsAcceptor::from(config),
        Err(error) => {
            // Built from a configuration that already loaded; cannot happen
            // short of a rustls bug, but must not panic either.
            tracing::error!(%error, "cannot serve inbound");
            return;
        }
    };
    let label: Arc<str> = format!("{sidecar} inbound").into();
    let open = stack.telemetry().open_connections(Direction::Inbound);
    let shared = Arc::new(Shared {
        acceptor,
        trust_domain: identity.trust_domain.clone(),
        stack,
        handshake_timeout: settings.handshake_timeout,
        server: Http2Server::new(settings),
    });
    serve(
        label,
        listener,
        settings.max_connections,
        settings.drain_grace,
        shutdown,
        Some(open),
        move |stream, peer, shutdown| shared.clone().connection(stream, peer, shutdown),
    )
    .await;
}

struct Shared {
    acceptor: TlsAcceptor,
    trust_domain: Arc<str>,
    stack: InboundStack,
    handshake_timeout: std::time::Duration,
    server: Http2Server,
}

impl Shared {
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, shutdown: Shutdown) {
        let _ = stream.set_nodelay(true);
        let tls = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::warn!(%peer, reason = %error, "refused TLS connection");
                self.tls_failure(handshake_failure_reason(&error));
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, reason = "handshake timed out", "refused TLS connection");
                self.tls_failure("timeout");
                return;
            }
        };
        let caller = match self.caller_of(&tls) {
            Ok(caller) => caller,
            Err((kind, reason)) => {
                tracing::warn!(%peer, %reason, "refused TLS connection");
                self.tls_failure(kind);
                return;
            }
        };
        tracing::debug!(%peer, caller = %caller.name(), "accepted connection");
        let service = self.stack.for_connection(caller);
        if let Err(error) = self.server.serve(tls, service, shutdown).await {
            tracing::debug!(%peer, %error, "inbound connection ended with an error");
        }
    }

    fn tls_failure(&self, reason: &'static str) {
        self.stack.telemetry().tls_failure(Direction::Inbound, reason);
    }

    /// The workload on the other end, from its verified certificate; else
    /// the metric's reason and the words for the log.
    fn caller_of(&self, tls: &TlsStream<TcpStream>) -> Result<Caller, (&'static str, String)> {
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or(("no_client_certificate", "no client certificate".to_string()))?;
        let id = meshwork_certs::spiffe_id_of(cert)
            .ok_or(("no_spiffe_id", "client certificate has no SPIFFE ID".to_string()))?;
        let name = workload_of(&id, &self.trust_domain).ok_or_else(|| {
            let reason = format!("{id} is not a workload of trust domain {}", self.trust_domain);
            ("foreign_identity", reason)
        })?;
        Ok(Caller::new(name, &id))
    }
}
