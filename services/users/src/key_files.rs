//! The token signing keys on disk: one Ed25519 private key per file,
//! `users-jwt-keys/<created-ms>.pem` (PKCS#8 PEM, mode 0600) in the data dir, so
//! the set survives restarts and replicas sharing the data dir see each other's
//! keys. The creation time in the name orders the keys: the newest signs.
//!
//! Before key rotation there was a single `users-jwt-private.pem`; on the first
//! start after the upgrade it joins the set (dated by its file's mtime), so the
//! tokens it signed keep verifying. The file itself is left where it was.

use std::{
    fs, io,
    io::Write,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use crate::Error;

/// The folder of signing keys, in the data dir.
pub const KEYS_DIR: &str = "users-jwt-keys";
/// The one key of the versions before rotation (read once, for the upgrade).
pub const PRIVATE_KEY_FILE: &str = "users-jwt-private.pem";
/// The public half of the current signing key (SPKI PEM), for verifiers that
/// read a file; the JWKS (`GetJwks`) is the way to follow rotation.
pub const PUBLIC_KEY_FILE: &str = "users-jwt-public.pem";

/// One private key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Unix milliseconds; the file's name.
    pub created_ms: i64,
    pub pem: String,
}

/// Every key in the folder (oldest first), creating the folder, importing the
/// key of an older version, or creating the first key, as needed.
pub fn load_or_create(data_dir: &Path, now_ms: i64) -> Result<Vec<StoredKey>, Error> {
    let dir = data_dir.join(KEYS_DIR);
    fs::create_dir_all(&dir).map_err(|e| key_err("cannot create", &dir, &e))?;
    let mut keys = list(&dir)?;
    if keys.is_empty() {
        let legacy = data_dir.join(PRIVATE_KEY_FILE);
        let key = match fs::read_to_string(&legacy) {
            Ok(pem) => {
                let created_ms = fs::metadata(&legacy)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
                tracing::info!(path = %legacy.display(), "importing the signing key of an earlier version");
                store(&dir, created_ms, pem)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(data_dir, now_ms)?,
            Err(e) => return Err(key_err("cannot read", &legacy, &e)),
        };
        // Another replica may have stored one at the same moment; the folder decides.
        keys = list(&dir)?;
        if keys.is_empty() {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The keys in the folder, oldest first. Other names (temporary files) are skipped.
pub fn list(dir: &Path) -> Result<Vec<StoredKey>, Error> {
    let entries = fs::read_dir(dir).map_err(|e| key_err("cannot list", dir, &e))?;
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
        tighten_permissions(&path).map_err(|e| key_err("cannot restrict", &path, &e))?;
        let pem = fs::read_to_string(&path).map_err(|e| key_err("cannot read", &path, &e))?;
        keys.push(StoredKey { created_ms, pem });
    }
    keys.sort_by_key(|k| k.created_ms);
    Ok(keys)
}

/// Generates a new key dated `now_ms` and stores it.
pub fn create(data_dir: &Path, now_ms: i64) -> Result<StoredKey, Error> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| Error::Key(e.to_string()))?;
    let key = store(&data_dir.join(KEYS_DIR), now_ms, pair.serialize_pem())?;
    tracing::info!(created_ms = key.created_ms, "created a token signing key");
    Ok(key)
}

/// Deletes the key dated `created_ms` (one that no token can still need).
pub fn remove(data_dir: &Path, created_ms: i64) -> Result<(), Error> {
    let path = data_dir.join(KEYS_DIR).join(format!("{created_ms}.pem"));
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(key_err("cannot remove", &path, &e)),
    }
}

/// (Re)writes the public key file from the current signing key's public PEM.
pub fn write_public(data_dir: &Path, public_pem: &str) -> Result<(), Error> {
    let path = data_dir.join(PUBLIC_KEY_FILE);
    write_atomically(&path, public_pem.as_bytes(), 0o644).map_err(|e| key_err("cannot write", &path, &e))
}

/// Stores `pem` as `<created_ms>.pem`, never overwriting: a name already taken
/// (two keys in one millisecond) moves to the next millisecond. The file is
/// complete and 0600 before it gets its name, so no reader sees half a key.
fn store(dir: &Path, mut created_ms: i64, pem: String) -> Result<StoredKey, Error> {
    let tmp = temp_path(&dir.join("new.pem"));
    write_new(&tmp, pem.as_bytes(), 0o600).map_err(|e| key_err("cannot write", &tmp, &e))?;
    let result = loop {
        let path = dir.join(format!("{created_ms}.pem"));
        match fs::hard_link(&tmp, &path) {
            Ok(()) => break Ok(StoredKey { created_ms, pem }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => created_ms += 1,
            Err(e) => break Err(key_err("cannot create", &path, &e)),
        }
    };
    let _ = fs::remove_file(&tmp);
    result
}

fn key_err(what: &str, path: &Path, e: &dyn std::fmt::Display) -> Error {
    Error::Key(format!("{what} {}: {e}", path.display()))
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = write_new(&tmp, contents, mode).and_then(|()| fs::rename(&tmp, path));
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

/// Creates `path` (which must not exist) with `mode` from the first byte on, so a
/// private key is never readable by others, not even for an instant.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A key file that others can read (restored from a backup, say) is put back to 0600.
fn tighten_permissions(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "signing key was readable by others; setting 0600");
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_one_key_then_finds_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), 1_000).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].created_ms, 1_000);
        assert_eq!(
            load_or_create(dir.path(), 2_000).unwrap(),
            first,
            "no second key on restart"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEYS_DIR).join("1000.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Two keys in one millisecond get two names.
        let again = create(dir.path(), 1_000).unwrap();
        assert_eq!(again.created_ms, 1_001);
        let all = list(&dir.path().join(KEYS_DIR)).unwrap();
        assert_eq!(all.iter().map(|k| k.created_ms).collect::<Vec<_>>(), [1_000, 1_001]);
        remove(dir.path(), 1_000).unwrap();
        assert_eq!(list(&dir.path().join(KEYS_DIR)).unwrap().len(), 1);
        assert_eq!(
            fs::read_dir(dir.path().join(KEYS_DIR)).unwrap().count(),
            1,
            "no temporary files"
        );
    }

    #[test]
    fn imports_the_key_of_an_earlier_version() {
        let dir = tempfile::tempdir().unwrap();
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem();
        fs::write(dir.path().join(PRIVATE_KEY_FILE), &pem).unwrap();
        let keys = load_or_create(dir.path(), i64::MAX).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].pem, pem);
        assert!(
            keys[0].created_ms > 0 && keys[0].created_ms < i64::MAX,
            "dated by its mtime"
        );
    }
}
