//! Certificates for the scenarios. Meshwork's come from `meshwork_certs`
//! exactly as `mesh up` issues them (SPIFFE IDs only). nginx and nghttpx
//! check a server's host name, so the peers get a CA of their own and leaves
//! for `localhost` (and 127.0.0.1), with the same key type (ECDSA P-256).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};

/// The trust domain of the benchmark mesh.
pub const TRUST_DOMAIN: &str = "bench.local";
/// The client workload (the load generator's identity) and the service.
pub const CLIENT: &str = "bench";
pub const SERVICE: &str = "echo";

/// A temp dir named `meshwork-bench-<purpose>-…` holding the mesh's
/// certificates, for one scenario's mesh.toml and state; removed when dropped.
pub fn mesh_dir(purpose: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("meshwork-bench-{purpose}-"))
        .tempdir()
        .context("creating a temp dir")?;
    mesh_certs(dir.path())?;
    Ok(dir)
}

/// Issues the mesh CA and the two workloads' leaves into `<state_dir>/certs`,
/// where `mesh proxy` looks for them.
pub fn mesh_certs(state_dir: &Path) -> Result<()> {
    let dir = state_dir.join("certs");
    let day = Duration::from_secs(24 * 3600);
    meshwork_certs::ensure(&dir, TRUST_DOMAIN, &[CLIENT, SERVICE], day, Duration::from_secs(60))
        .context("issuing the benchmark mesh's certificates")?;
    Ok(())
}

/// PEM files for a pair of peer proxies.
pub struct PeerCerts {
    pub ca: PathBuf,
    /// The outbound proxy's client certificate and key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The inbound proxy's server certificate and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub fn peer_certs(dir: &Path) -> Result<PeerCerts> {
    let generate = || KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a key");
    let ca_key = generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "meshwork-bench peer proxies CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).context("signing the peer CA")?;
    let issuer = Issuer::new(ca, ca_key);

    let write = |name: &str, pem: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| -> Result<(PathBuf, PathBuf)> {
        let key = generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).context("leaf parameters")?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).context("signing a peer leaf")?;
        Ok((
            write(&format!("{name}.pem"), &cert.pem())?,
            write(&format!("{name}-key.pem"), &key.serialize_pem())?,
        ))
    };
    let (client_cert, client_key) = leaf("peer-client", ExtendedKeyUsagePurpose::ClientAuth)?;
    let (server_cert, server_key) = leaf("peer-server", ExtendedKeyUsagePurpose::ServerAuth)?;
    Ok(PeerCerts {
        ca: write("peer-ca.pem", &ca_cert.pem())?,
        client_cert,
        client_key,
        server_cert,
        server_key,
    })
}
