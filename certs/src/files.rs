//! Writing certificate files so that a reader never sees half of one: write a
//! temporary file beside the target (keys with mode 0600 from the start, so a
//! key is never readable by others even for an instant), then rename it over
//! the target, which is atomic on one file system.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
};

use crate::error::CertError;

/// Mode for private keys: owner only.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode for certificates: public material.
pub(crate) const CERT_MODE: u32 = 0o644;

/// Creates `dir` (and parents) with mode 0700 if it is missing.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), CertError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(CertError::io(dir))
}

/// Atomically replaces `path` with `contents`, created with `mode`.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let file_name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        // A leftover from a crashed run would keep its old mode; start afresh.
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|cause| {
        let _ = fs::remove_file(&tmp);
        CertError::Io {
            path: path.to_path_buf(),
            cause,
        }
    })
}
