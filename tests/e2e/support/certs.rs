//! Certificates for in-process tests: a mesh CA and workload leaves in a
//! temporary folder, made by meshwork-certs exactly as the launcher does.

use std::{path::Path, time::Duration};

use meshwork_certs::{Ca, CertPaths, IssuedLeaf};
use tempfile::TempDir;

/// The trust domain of every in-process test mesh.
pub const TRUST_DOMAIN: &str = "test.local";

pub struct TestCerts {
    pub dir: TempDir,
    pub paths: CertPaths,
    pub ca: Ca,
}

impl TestCerts {
    /// A CA and a one-hour leaf for each of `workloads`.
    pub fn new(workloads: &[&str]) -> TestCerts {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        let hour = Duration::from_secs(3600);
        let issued = meshwork_certs::ensure(&certs, TRUST_DOMAIN, workloads, hour, Duration::from_secs(60))
            .expect("issue certificates");
        assert_eq!(issued.len(), workloads.len());
        let paths = CertPaths::new(&certs);
        let ca = Ca::load(&paths).expect("load CA");
        TestCerts { dir, paths, ca }
    }

    /// The folder the mesh's `state_dir` should point at (certs live in `certs/`).
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new leaf for `name` from the mesh CA, not written anywhere.
    pub fn leaf(&self, name: &str) -> IssuedLeaf {
        self.ca.issue_leaf(name, Duration::from_secs(3600)).expect("issue leaf")
    }

    /// The leaf on disk for `name`.
    pub fn leaf_on_disk(&self, name: &str) -> IssuedLeaf {
        IssuedLeaf {
            cert_pem: std::fs::read_to_string(self.paths.leaf_cert(name)).expect("read cert"),
            key_pem: std::fs::read_to_string(self.paths.leaf_key(name)).expect("read key"),
        }
    }
}
