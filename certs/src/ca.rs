//! The mesh's root certificate authority in memory: generate one, load one
//! from disk, and issue workload leaf certificates carrying a SPIFFE ID.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, string::Ia5String,
};
use time::OffsetDateTime;

use crate::{
    error::CertError,
    files::{CERT_MODE, KEY_MODE, write_atomic},
    inspect,
    paths::CertPaths,
};

/// How long a freshly generated root CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Certificates start to be valid a little in the past, so that a peer whose
/// clock is slightly behind ours does not refuse a certificate issued just now.
const BACKDATE: Duration = Duration::from_secs(60);

/// A mesh root CA: its certificate, its key, and the trust domain it serves.
pub struct Ca {
    trust_domain: String,
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// A workload certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedLeaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedLeaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedLeaf")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl IssuedLeaf {
    /// Writes the key (0600) and then the certificate over `name`'s files.
    pub fn write(&self, paths: &CertPaths, name: &str) -> Result<(), CertError> {
        write_atomic(&paths.leaf_key(name), self.key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(&paths.leaf_cert(name), self.cert_pem.as_bytes(), CERT_MODE)
    }
}

fn generate_error(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertError {
    let what = what.into();
    move |cause| CertError::Generate { what, cause }
}

fn uri_san(uri: &str) -> Result<SanType, CertError> {
    Ia5String::try_from(uri)
        .map(SanType::URI)
        .map_err(|_| CertError::BadSpiffeId(uri.to_string()))
}

impl Ca {
    /// A new ECDSA P-256 root CA for `trust_domain`, valid for about a year.
    /// Its certificate names the trust domain as the URI SAN `spiffe://<td>`,
    /// which is how [`Ca::load`] knows which trust domain a CA on disk serves.
    pub fn generate(trust_domain: &str) -> Result<Ca, CertError> {
        let what = || format!("the CA for {trust_domain}");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_error(what()))?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Meshwork");
        // A name unique to this key: two CAs of one trust domain (say, a
        // developer's and CI's) then differ by name, so a certificate from the
        // other one is reported as "unknown issuer", not as a bad signature.
        let tag: String = key
            .public_key_raw()
            .iter()
            .rev()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        dn.push(
            DnType::CommonName,
            format!("Meshwork root CA for {trust_domain} ({tag})"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))?];
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(now + CA_LIFETIME);
        let cert = params.self_signed(&key).map_err(generate_error(what()))?;
        Ok(Ca {
            trust_domain: trust_domain.to_string(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA certificate and key from `paths`, checking that they
    /// belong together and reading the trust domain from the certificate.
    pub fn load(paths: &CertPaths) -> Result<Ca, CertError> {
        let cert_path = paths.ca_cert();
        let key_path = paths.ca_key();
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(CertError::io(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(CertError::io(&key_path))?;
        let invalid = |path: &std::path::Path, what, reason: String| CertError::Invalid {
            path: path.to_path_buf(),
            what,
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(&key_path, "CA key", e.to_string()))?;
        let cert_der =
            inspect::pem_to_der(&cert_pem).map_err(|reason| invalid(&cert_path, "CA certificate", reason))?;
        let info = inspect::ca_info(&cert_der).map_err(|reason| invalid(&cert_path, "CA certificate", reason))?;
        if info.spki != key.subject_public_key_info() {
            return Err(invalid(&key_path, "CA key", "it does not match ca.pem".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(|e| invalid(&cert_path, "CA certificate", e.to_string()))?;
        Ok(Ca {
            trust_domain: info.trust_domain,
            cert_pem,
            cert_der,
            key_pem,
            issuer,
        })
    }

    /// Writes the key (0600) and the certificate into `paths`.
    pub fn write(&self, paths: &CertPaths) -> Result<(), CertError> {
        write_atomic(&paths.ca_key(), self.key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(&paths.ca_cert(), self.cert_pem.as_bytes(), CERT_MODE)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// When the CA certificate stops being valid.
    pub fn not_after(&self) -> Result<SystemTime, CertError> {
        inspect::ca_info(&self.cert_der)
            .map(|info| info.not_after)
            .map_err(|reason| CertError::Invalid {
                path: "ca.pem".into(),
                what: "CA certificate",
                reason,
            })
    }

    /// A leaf for workload `name` in this CA's trust domain, valid from now
    /// for `lifetime`.
    pub fn issue_leaf(&self, name: &str, lifetime: Duration) -> Result<IssuedLeaf, CertError> {
        let now = SystemTime::now();
        let id = meshwork_config::spiffe_id(&self.trust_domain, name);
        self.issue_leaf_for(&id, now - BACKDATE, now + lifetime)
    }

    /// A leaf whose only name is the URI SAN `spiffe_id`, valid between the
    /// two instants. Tests use it for wrong identities and expired leaves.
    pub fn issue_leaf_for(
        &self,
        spiffe_id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedLeaf, CertError> {
        if !spiffe_id.starts_with("spiffe://") {
            return Err(CertError::BadSpiffeId(spiffe_id.to_string()));
        }
        let what = || format!("a certificate for {spiffe_id}");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_error(what()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Meshwork");
        dn.push(DnType::CommonName, spiffe_id.rsplit('/').next().unwrap_or(spiffe_id));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.subject_alt_names = vec![uri_san(spiffe_id)?];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        let cert = params.signed_by(&key, &self.issuer).map_err(generate_error(what()))?;
        Ok(IssuedLeaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
