//! The inbound listener's TLS configuration: our certificate (reloading),
//! client certificates required and verified against the mesh CA, HTTP/2.

use std::sync::Arc;

use rustls::{
    ServerConfig,
    server::{NoServerSessionStorage, WebPkiClientVerifier},
};

use super::{Identity, IdentityError};

pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>, IdentityError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(identity.roots.clone(), identity.provider.clone())
        .build()
        .map_err(|e| IdentityError::Config(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(identity.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| IdentityError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity.key.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No session resumption: every connection presents and verifies a
    // certificate, so a rotated or expired client certificate is noticed.
    // Mesh connections are long-lived and pooled, so full handshakes are rare.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
