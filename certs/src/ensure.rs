//! `ensure`: bring a certificates folder up to date for a mesh: a CA, and a
//! current leaf for every workload, reissuing only what is missing, foreign,
//! wrong or about to expire.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use rcgen::{KeyPair, PublicKeyData};

use crate::{ca::Ca, error::CertError, files::create_private_dir, inspect::leaf_problem, paths::CertPaths};

/// Makes sure `dir` holds a CA for `trust_domain` and a valid leaf for each
/// of `workloads`, and returns the names whose leaves it (re)issued.
///
/// A leaf is reissued when it is missing or unreadable, signed by another CA,
/// names another SPIFFE ID (for example another trust domain), or expires
/// within `renew_before`. The CA is replaced (and with it every leaf) when it
/// is missing, unreadable, for another trust domain, or would expire before a
/// new leaf does: a leaf must never outlive the CA that vouches for it.
/// Running sidecars load the CA once, so replacing it needs their restart.
pub fn ensure(
    dir: &Path,
    trust_domain: &str,
    workloads: &[&str],
    leaf_lifetime: Duration,
    renew_before: Duration,
) -> Result<Vec<String>, CertError> {
    create_private_dir(dir)?;
    let paths = CertPaths::new(dir);

    let existing = Ca::load(&paths).ok().filter(|ca| {
        ca.trust_domain() == trust_domain
            && ca
                .not_after()
                .is_ok_and(|end| end > SystemTime::now() + leaf_lifetime + renew_before)
    });
    let (ca, new_ca) = match existing {
        Some(ca) => (ca, false),
        None => {
            let ca = Ca::generate(trust_domain)?;
            ca.write(&paths)?;
            (ca, true)
        }
    };

    let mut issued = Vec::new();
    for &name in workloads {
        let expected = meshwork_config::spiffe_id(trust_domain, name);
        let keep = !new_ca && current_leaf_ok(&paths, name, &ca, &expected, renew_before);
        if !keep {
            ca.issue_leaf(name, leaf_lifetime)?.write(&paths, name)?;
            issued.push(name.to_string());
        }
    }
    Ok(issued)
}

/// Whether `name`'s files on disk are a good leaf for `expected`.
fn current_leaf_ok(paths: &CertPaths, name: &str, ca: &Ca, expected: &str, renew_before: Duration) -> bool {
    let (Ok(cert_pem), Ok(key_pem)) = (
        std::fs::read_to_string(paths.leaf_cert(name)),
        std::fs::read_to_string(paths.leaf_key(name)),
    ) else {
        return false;
    };
    let Ok(key) = KeyPair::from_pem(&key_pem) else {
        return false;
    };
    leaf_problem(&cert_pem, &key.subject_public_key_info(), ca, expected, renew_before).is_none()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::inspect::{pem_to_der, spiffe_id_of};

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const HOUR: Duration = Duration::from_secs(3600);

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn issues_everything_once_then_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        let first = ensure(&certs, "example.org", &["cart", "demo"], DAY, HOUR).expect("ensure");
        assert_eq!(first, ["cart", "demo"]);
        let second = ensure(&certs, "example.org", &["cart", "demo"], DAY, HOUR).expect("ensure");
        assert!(second.is_empty(), "reissued {second:?}");
        // A new workload gets only its own leaf.
        let third = ensure(&certs, "example.org", &["cart", "demo", "users"], DAY, HOUR).expect("ensure");
        assert_eq!(third, ["users"]);
    }

    #[test]
    fn keys_are_private_and_dir_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        ensure(&certs, "example.org", &["cart"], DAY, HOUR).expect("ensure");
        let paths = CertPaths::new(&certs);
        assert_eq!(mode(&certs), 0o700);
        assert_eq!(mode(&paths.ca_key()), 0o600);
        assert_eq!(mode(&paths.leaf_key("cart")), 0o600);
        assert_eq!(mode(&paths.leaf_cert("cart")), 0o644);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(&certs)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn renews_leaves_near_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A leaf of 2 hours with renew_before 1 hour is kept...
        ensure(dir.path(), "example.org", &["cart"], 2 * HOUR, HOUR).expect("ensure");
        let kept = ensure(dir.path(), "example.org", &["cart"], 2 * HOUR, HOUR).expect("ensure");
        assert!(kept.is_empty());
        // ...but renewed once it is within renew_before of expiry.
        let renewed = ensure(dir.path(), "example.org", &["cart"], 2 * HOUR, 3 * HOUR).expect("ensure");
        assert_eq!(renewed, ["cart"]);
    }

    #[test]
    fn leaves_carry_their_spiffe_id_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure(dir.path(), "example.org", &["cart", "users"], DAY, HOUR).expect("ensure");
        let paths = CertPaths::new(dir.path());
        for name in ["cart", "users"] {
            let pem = std::fs::read_to_string(paths.leaf_cert(name)).expect("read");
            let der = pem_to_der(&pem).expect("der");
            assert_eq!(spiffe_id_of(&der), Some(format!("spiffe://example.org/service/{name}")));
            let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
            let san = cert.subject_alternative_name().expect("ok").expect("san");
            assert_eq!(san.value.general_names.len(), 1);
            let eku = cert.extended_key_usage().expect("ok").expect("eku");
            assert!(eku.value.server_auth && eku.value.client_auth);
            assert!(!cert.is_ca());
        }
    }

    #[test]
    fn replaces_foreign_and_wrong_leaves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = CertPaths::new(dir.path());
        ensure(dir.path(), "example.org", &["cart", "users"], DAY, HOUR).expect("ensure");
        // cart's leaf from a foreign CA, users' leaf with cart's identity.
        let foreign = Ca::generate("example.org").expect("ca");
        foreign
            .issue_leaf("cart", DAY)
            .expect("leaf")
            .write(&paths, "cart")
            .expect("write");
        let ca = Ca::load(&paths).expect("load");
        ca.issue_leaf("cart", DAY)
            .expect("leaf")
            .write(&paths, "users")
            .expect("write");
        let reissued = ensure(dir.path(), "example.org", &["cart", "users"], DAY, HOUR).expect("ensure");
        assert_eq!(reissued, ["cart", "users"]);
        // A missing key also forces a new leaf.
        std::fs::remove_file(paths.leaf_key("cart")).expect("rm");
        assert_eq!(
            ensure(dir.path(), "example.org", &["cart"], DAY, HOUR).expect("ensure"),
            ["cart"]
        );
    }

    #[test]
    fn new_trust_domain_means_new_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure(dir.path(), "one.example", &["cart"], DAY, HOUR).expect("ensure");
        let again = ensure(dir.path(), "two.example", &["cart"], DAY, HOUR).expect("ensure");
        assert_eq!(again, ["cart"]);
        let ca = Ca::load(&CertPaths::new(dir.path())).expect("load");
        assert_eq!(ca.trust_domain(), "two.example");
    }

    #[test]
    fn loaded_ca_issues_leaves_that_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure(dir.path(), "example.org", &[], DAY, HOUR).expect("ensure");
        let paths = CertPaths::new(dir.path());
        let ca = Ca::load(&paths).expect("load");
        let leaf = ca.issue_leaf("x", DAY).expect("leaf");
        let key = KeyPair::from_pem(&leaf.key_pem).expect("key");
        let problem = leaf_problem(
            &leaf.cert_pem,
            &key.subject_public_key_info(),
            &ca,
            "spiffe://example.org/service/x",
            HOUR,
        );
        assert_eq!(problem, None);
    }
}
