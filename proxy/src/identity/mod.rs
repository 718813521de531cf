//! The sidecar's identity and trust: the mesh CA it trusts, its own
//! certificate and key (reloaded when the files change), and the rustls
//! configurations built from them for the inbound server and for each
//! outbound destination.

mod client;
mod error;
mod load;
mod reload;
mod server;
mod spiffe;

use std::{path::Path, sync::Arc, time::Duration};

use rustls::{RootCertStore, crypto::CryptoProvider};

pub use client::{IdentityMismatch, client_config};
pub use error::IdentityError;
pub use reload::ReloadingKey;
pub use server::server_config;
pub use spiffe::workload_of;

use crate::shutdown::Shutdown;

/// Everything TLS needs to know about this sidecar.
#[derive(Clone)]
pub struct Identity {
    pub trust_domain: Arc<str>,
    pub provider: Arc<CryptoProvider>,
    pub roots: Arc<RootCertStore>,
    pub key: Arc<ReloadingKey>,
}

impl Identity {
    /// Loads the CA and this workload's certificate and key, checking that the
    /// certificate is `expected_id`'s.
    pub fn load(
        trust_domain: &str,
        expected_id: &str,
        ca_cert: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<Identity, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(load::roots(ca_cert)?);
        let key = Arc::new(ReloadingKey::load(cert, key, expected_id, provider.clone())?);
        Ok(Identity {
            trust_domain: trust_domain.into(),
            provider,
            roots,
            key,
        })
    }

    /// Polls the certificate and key files for changes until shutdown.
    pub fn reload(&self, interval: Duration, shutdown: Shutdown) -> impl Future<Output = ()> + Send + 'static {
        self.key.clone().watch(interval, shutdown)
    }
}

/// A failed TLS handshake as a short, bounded metric label, on either side.
pub fn handshake_failure_reason(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_client_certificate",
        Some(Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => {
            "certificate_expired"
        }
        Some(Error::InvalidCertificate(CertificateError::Other(other)))
            if other.0.downcast_ref::<IdentityMismatch>().is_some() =>
        {
            "foreign_identity"
        }
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(Error::AlertReceived(_)) => "alert_received",
        Some(Error::NoApplicationProtocol) => "no_application_protocol",
        Some(_) => "protocol_error",
        None => "io_error",
    }
}
