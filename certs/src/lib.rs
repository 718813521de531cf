//! The mesh's certificate authority: one root CA per mesh and one short-lived
//! leaf certificate per workload whose only name is its SPIFFE ID
//! (`spiffe://<trust-domain>/service/<name>`), kept on disk and renewed before
//! it expires.
//!
//! [`ensure`] is what the launcher calls; [`Ca`] is the in-memory authority
//! (tests use it to make foreign CAs, wrong identities and expired leaves);
//! [`spiffe_id_of`] reads the identity back out of a certificate.

mod ca;
mod ensure;
mod error;
mod files;
mod inspect;
mod paths;

pub use ca::{Ca, IssuedLeaf};
pub use ensure::ensure;
pub use error::CertError;
pub use inspect::spiffe_id_of;
pub use paths::CertPaths;
