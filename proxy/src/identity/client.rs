//! The outbound TLS configuration for one destination: our certificate
//! (reloading) as the client certificate, and a server verifier that checks
//! the chain to the mesh CA and then that the server is the workload we meant
//! to call, by its SPIFFE ID. DNS names play no part: mesh certificates carry
//! only a SPIFFE ID.

use std::sync::Arc;

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::ParsedCertificate,
};

use super::{Identity, IdentityError};

/// The peer presented a valid mesh certificate, but for another workload.
#[derive(Debug, thiserror::Error)]
#[error("identity mismatch: {destination} presented {found}, expected {expected}")]
pub struct IdentityMismatch {
    /// For example `catalog at 127.0.0.1:7202`.
    pub destination: String,
    pub found: String,
    pub expected: String,
}

#[derive(Debug)]
struct SpiffeVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    expected_id: String,
    destination: String,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, self.algorithms.all)?;
        let found = meshwork_certs::spiffe_id_of(end_entity);
        if found.as_deref() == Some(self.expected_id.as_str()) {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = IdentityMismatch {
            destination: self.destination.clone(),
            found: found.unwrap_or_else(|| "no SPIFFE ID".into()),
            expected: self.expected_id.clone(),
        };
        tracing::warn!(%mismatch, "refusing peer");
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(mismatch),
        ))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TLS for calling `destination` (a label for messages, such as
/// `catalog at 127.0.0.1:7202`), which must present `expected_id`.
pub fn client_config(
    identity: &Identity,
    expected_id: &str,
    destination: &str,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let verifier = SpiffeVerifier {
        roots: identity.roots.clone(),
        algorithms: identity.provider.signature_verification_algorithms,
        expected_id: expected_id.to_string(),
        destination: destination.to_string(),
    };
    let mut config = ClientConfig::builder_with_provider(identity.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| IdentityError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(identity.key.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
