//! Where the CA and each workload's certificate and key live inside a folder.

use std::path::{Path, PathBuf};

/// The layout of a certificates folder:
/// `ca.pem`, `ca-key.pem`, `<name>.pem` and `<name>-key.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    dir: PathBuf,
}

impl CertPaths {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The mesh CA's certificate (PEM): every sidecar trusts it.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The mesh CA's private key (PEM): only the launcher reads it.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    /// A workload's leaf certificate (PEM).
    pub fn leaf_cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// A workload's private key (PEM).
    pub fn leaf_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-key.pem"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let p = CertPaths::new(Path::new("/s/certs"));
        assert_eq!(p.ca_cert(), Path::new("/s/certs/ca.pem"));
        assert_eq!(p.ca_key(), Path::new("/s/certs/ca-key.pem"));
        assert_eq!(p.leaf_cert("cart"), Path::new("/s/certs/cart.pem"));
        assert_eq!(p.leaf_key("cart"), Path::new("/s/certs/cart-key.pem"));
    }
}
