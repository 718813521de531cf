//! The files the users service keeps beside its database: the public half of
//! the current signing key, for verifiers that read a file, and the private
//! keys of earlier versions, which kept them as files and are read once to
//! import them (see [`key_store`](crate::key_store)):
//! `users-jwt-keys/<created-ms>.pem` (with rotation) or, before rotation, the
//! single `users-jwt-private.pem`, dated by its file's mtime. The old files
//! are left where they were.

use std::{
    fs, io,
    io::Write,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use crate::{Error, key_store::StoredKey};

/// The folder of signing keys of the versions that kept them as files.
pub const KEYS_DIR: &str = "users-jwt-keys";
/// The one key of the versions before rotation.
pub const PRIVATE_KEY_FILE: &str = "users-jwt-private.pem";
/// The public half of the current signing key (SPKI PEM), for verifiers that
/// read a file; the JWKS (`GetJwks`) is the way to follow rotation.
pub const PUBLIC_KEY_FILE: &str = "users-jwt-public.pem";

/// The private keys an earlier version left in `data_dir`, oldest first;
/// none when it left none.
pub fn legacy_keys(data_dir: &Path) -> Result<Vec<StoredKey>, Error> {
    let dir = data_dir.join(KEYS_DIR);
    let mut keys = match fs::read_dir(&dir) {
        Ok(entries) => folder_keys(&dir, entries)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(key_err("cannot list", &dir, &e)),
    };
    if keys.is_empty() {
        let file = data_dir.join(PRIVATE_KEY_FILE);
        match fs::read_to_string(&file) {
            Ok(pem) => {
                let created_ms = fs::metadata(&file)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
                keys.push(StoredKey { created_ms, pem });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(key_err("cannot read", &file, &e)),
        }
    }
    Ok(keys)
}

/// The `<created-ms>.pem` keys of the folder, oldest first; other names
/// (temporary files) are skipped.
fn folder_keys(dir: &Path, entries: fs::ReadDir) -> Result<Vec<StoredKey>, Error> {
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| key_err("cannot list", dir, &e))?;
        let name = entry.file_name();
        let Some(created_ms) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".pem"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let pem = fs::read_to_string(&path).map_err(|e| key_err("cannot read", &path, &e))?;
        keys.push(StoredKey { created_ms, pem });
    }
    keys.sort_by_key(|k| k.created_ms);
    Ok(keys)
}

/// (Re)writes the public key file from the current signing key's public PEM.
pub fn write_public(data_dir: &Path, public_pem: &str) -> Result<(), Error> {
    let path = data_dir.join(PUBLIC_KEY_FILE);
    write_atomically(&path, public_pem.as_bytes()).map_err(|e| key_err("cannot write", &path, &e))
}

fn key_err(what: &str, path: &Path, e: &dyn std::fmt::Display) -> Error {
    Error::Key(format!("{what} {}: {e}", path.display()))
}

/// Writes a temporary file and renames it over `path`, so a reader never
/// sees half a key.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = fs::File::create_new(&tmp)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", uuid::Uuid::new_v4()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem() -> String {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem()
    }

    #[test]
    fn a_data_dir_without_old_keys_has_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(legacy_keys(dir.path()).unwrap(), []);
    }

    #[test]
    fn finds_the_rotated_keys_of_an_earlier_version_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join(KEYS_DIR);
        fs::create_dir(&keys).unwrap();
        let (older, newer) = (pem(), pem());
        fs::write(keys.join("2000.pem"), &newer).unwrap();
        fs::write(keys.join("1000.pem"), &older).unwrap();
        fs::write(keys.join("new.pem.tmp-x"), "half a key").unwrap();
        let found = legacy_keys(dir.path()).unwrap();
        assert_eq!(
            found,
            [
                StoredKey {
                    created_ms: 1000,
                    pem: older
                },
                StoredKey {
                    created_ms: 2000,
                    pem: newer
                }
            ]
        );
    }

    #[test]
    fn finds_the_single_key_of_a_version_before_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let pem = pem();
        fs::write(dir.path().join(PRIVATE_KEY_FILE), &pem).unwrap();
        let keys = legacy_keys(dir.path()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].pem, pem);
        assert!(keys[0].created_ms > 0, "dated by its mtime");
    }
}
