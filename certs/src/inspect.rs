//! Reading certificates back: the SPIFFE ID in a certificate, a CA's trust
//! domain, and whether a leaf on disk is still good enough to keep.

use std::time::{Duration, SystemTime};

use x509_parser::{certificate::X509Certificate, extensions::GeneralName, pem::parse_x509_pem, prelude::FromDer};

use crate::ca::Ca;

/// The certificate's URI SAN that starts with `spiffe://`, if any.
/// Returns `None` for anything that does not parse as a certificate.
pub fn spiffe_id_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    spiffe_uri(&cert).map(str::to_string)
}

fn spiffe_uri<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a str> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
        _ => None,
    })
}

/// The DER of the first PEM block in `pem`.
pub(crate) fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let (_, block) = parse_x509_pem(pem.as_bytes()).map_err(|e| format!("not PEM: {e}"))?;
    if block.label != "CERTIFICATE" {
        return Err(format!("expected a CERTIFICATE block, found {}", block.label));
    }
    Ok(block.contents)
}

/// What [`Ca::load`] needs from a CA certificate.
pub(crate) struct CaInfo {
    pub trust_domain: String,
    pub spki: Vec<u8>,
    pub not_after: SystemTime,
}

pub(crate) fn ca_info(der: &[u8]) -> Result<CaInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("not a certificate: {e}"))?;
    if !cert.is_ca() {
        return Err("not a CA certificate".into());
    }
    let trust_domain = spiffe_uri(&cert)
        .and_then(|uri| uri.strip_prefix("spiffe://"))
        .filter(|td| !td.is_empty() && !td.contains('/'))
        .ok_or("it names no trust domain (URI SAN spiffe://<trust-domain>)")?
        .to_string();
    Ok(CaInfo {
        trust_domain,
        spki: cert.public_key().raw.to_vec(),
        not_after: to_system_time(cert.validity().not_after.timestamp()),
    })
}

fn to_system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// Why the leaf `cert_pem` with key `key_spki` must be reissued, or `None`
/// when it is signed by `ca`, carries exactly `expected_id` and stays valid
/// for longer than `renew_before`.
pub(crate) fn leaf_problem(
    cert_pem: &str,
    key_spki: &[u8],
    ca: &Ca,
    expected_id: &str,
    renew_before: Duration,
) -> Option<String> {
    let der = match pem_to_der(cert_pem) {
        Ok(der) => der,
        Err(reason) => return Some(reason),
    };
    let cert = match X509Certificate::from_der(&der) {
        Ok((_, cert)) => cert,
        Err(e) => return Some(format!("not a certificate: {e}")),
    };
    let ca_cert = match X509Certificate::from_der(ca.cert_der()) {
        Ok((_, cert)) => cert,
        Err(e) => return Some(format!("CA certificate does not parse: {e}")),
    };
    if cert.verify_signature(Some(ca_cert.public_key())).is_err() {
        return Some("issued by another CA".into());
    }
    if cert.public_key().raw != key_spki {
        return Some("its key file does not match it".into());
    }
    match spiffe_uri(&cert) {
        Some(id) if id == expected_id => {}
        Some(id) => return Some(format!("it names {id}, not {expected_id}")),
        None => return Some("it carries no SPIFFE ID".into()),
    }
    let not_after = to_system_time(cert.validity().not_after.timestamp());
    if not_after <= SystemTime::now() + renew_before {
        return Some("it expires soon".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_spiffe_id_from_leaf() {
        let ca = Ca::generate("example.org").expect("ca");
        let leaf = ca.issue_leaf("cart", Duration::from_secs(3600)).expect("leaf");
        let der = pem_to_der(&leaf.cert_pem).expect("pem");
        assert_eq!(spiffe_id_of(&der).as_deref(), Some("spiffe://example.org/service/cart"));
    }

    #[test]
    fn garbage_has_no_spiffe_id() {
        assert_eq!(spiffe_id_of(b"not a certificate"), None);
        assert_eq!(spiffe_id_of(&[]), None);
    }

    #[test]
    fn ca_names_its_trust_domain() {
        let ca = Ca::generate("example.org").expect("ca");
        let info = ca_info(ca.cert_der()).expect("info");
        assert_eq!(info.trust_domain, "example.org");
        assert!(info.not_after > SystemTime::now() + Duration::from_secs(300 * 24 * 3600));
    }
}
