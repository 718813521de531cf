//! Reading PEM files into rustls types: the trusted CA and a certificate with
//! its private key.

use std::{fs, path::Path, sync::Arc};

use rustls::{RootCertStore, crypto::CryptoProvider, pki_types::CertificateDer, sign::CertifiedKey};

use super::IdentityError;

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    fs::read(path).map_err(|cause| IdentityError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

fn invalid(path: &Path, reason: impl Into<String>) -> IdentityError {
    IdentityError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "holds no certificate"));
    }
    Ok(certs)
}

/// The mesh CA as a trust store.
pub fn roots(ca_cert: &Path) -> Result<RootCertStore, IdentityError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_cert)? {
        roots
            .add(cert)
            .map_err(|e| invalid(ca_cert, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, IdentityError> {
    let chain = certs(cert)?;
    let pem = read(key)?;
    let der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| invalid(key, format!("not PEM: {e}")))?
        .ok_or_else(|| invalid(key, "holds no private key"))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| invalid(key, format!("not a usable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    // A key and certificate written one after the other can be caught
    // half-replaced; refusing a mismatched pair keeps the old one in use.
    certified
        .keys_match()
        .map_err(|e| invalid(key, format!("does not match {}: {e}", cert.display())))?;
    Ok(Arc::new(certified))
}
