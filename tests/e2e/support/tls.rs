//! Raw TLS clients for probing a sidecar's inbound listener: present any
//! certificate (or none), see whether the sidecar lets the connection carry
//! HTTP/2, and see which certificate it served.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use meshwork_certs::IssuedLeaf;
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// Accepts whatever certificate the server presents (checking only the
/// handshake signatures): these tests look at what is presented.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3 client presenting `client` (or no certificate), offering h2,
/// without session resumption so every connection sees a full handshake.
pub fn client_config(client: Option<&IssuedLeaf>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut config = match client {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("cert PEM");
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
            builder.with_client_auth_cert(chain, key).expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// What happened to one connection attempt.
#[derive(Debug)]
pub enum Outcome {
    /// The server spoke HTTP/2 to us; `server_cert` is what it presented.
    Accepted { server_cert: Vec<u8> },
    /// The handshake failed or the server closed the connection: why.
    Refused(String),
}

/// Connects to `addr`, completes TLS, sends the HTTP/2 preface and waits for
/// the server's first bytes. In TLS 1.3 a server that rejects the client's
/// certificate says so with an alert after the client thinks it is done, so
/// only the first read tells acceptance from refusal.
pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Outcome {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("mesh").expect("name");
        let mut tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let server_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
        tls.write_all(&preface).await.map_err(|e| e.to_string())?;
        let mut first = [0u8; 9];
        match tls.read(&mut first).await {
            Ok(0) => Err("connection closed".to_string()),
            // A frame header whose type is SETTINGS (4): the server speaks h2.
            Ok(_) if first[3] == 4 => Ok(server_cert),
            Ok(n) => Err(format!("unexpected bytes {:?}", &first[..n])),
            Err(e) => Err(e.to_string()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(server_cert)) => Outcome::Accepted { server_cert },
        Ok(Err(reason)) => Outcome::Refused(reason),
        Err(_) => Outcome::Refused("timed out".into()),
    }
}

/// The DER of the first certificate in a PEM text.
pub fn der_of(cert_pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .expect("cert PEM")
        .to_vec()
}
