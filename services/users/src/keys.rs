//! The Ed25519 key that signs access tokens: created on first start, kept in the data
//! dir (private key PKCS#8 PEM, mode 0600; public key SPKI PEM beside it for whoever
//! verifies tokens), and the signing itself.

use std::{
    fs, io,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::Error;

pub const PRIVATE_KEY_FILE: &str = "users-jwt-private.pem";
pub const PUBLIC_KEY_FILE: &str = "users-jwt-public.pem";
/// The `iss` claim of every token.
pub const TOKEN_ISSUER: &str = "meshwork-users";
/// How long a token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Signs access tokens with the service's key.
pub struct Signer {
    key: EncodingKey,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iss: &'a str,
    iat: i64,
    exp: i64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// Loads the key from `data_dir`, creating it on first start, and (re)writes the
    /// public key file from it so the two can never disagree.
    pub async fn load_or_create(data_dir: &Path) -> Result<Self, Error> {
        let dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || load_or_create(&dir))
            .await
            .map_err(|e| Error::Key(e.to_string()))?
    }

    /// A compact JWT for `user_id`, issued at `now_secs`; returns it with its expiry
    /// (Unix seconds).
    pub fn sign(&self, user_id: &str, now_secs: i64) -> Result<(String, i64), Error> {
        let exp = now_secs.saturating_add(TOKEN_TTL.as_secs() as i64);
        let claims = Claims {
            sub: user_id,
            iss: TOKEN_ISSUER,
            iat: now_secs,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)?;
        Ok((token, exp))
    }
}

fn load_or_create(dir: &Path) -> Result<Signer, Error> {
    let key_err =
        |what: &str, path: &Path, e: &dyn std::fmt::Display| Error::Key(format!("{what} {}: {e}", path.display()));
    fs::create_dir_all(dir).map_err(|e| key_err("cannot create", dir, &e))?;
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let pem = match fs::read_to_string(&private_path) {
        Ok(pem) => {
            tighten_permissions(&private_path).map_err(|e| key_err("cannot restrict", &private_path, &e))?;
            pem
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_private_key(&private_path)?,
        Err(e) => return Err(key_err("cannot read", &private_path, &e)),
    };
    let pair = rcgen::KeyPair::from_pem(&pem).map_err(|e| key_err("bad key in", &private_path, &e))?;
    if !pair.is_compatible(&rcgen::PKCS_ED25519) {
        return Err(Error::Key(format!(
            "{} does not hold an Ed25519 key",
            private_path.display()
        )));
    }
    let public_path = dir.join(PUBLIC_KEY_FILE);
    write_atomically(&public_path, pair.public_key_pem().as_bytes(), 0o644)
        .map_err(|e| key_err("cannot write", &public_path, &e))?;
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| key_err("unusable key in", &private_path, &e))?;
    Ok(Signer { key })
}

/// Generates a key and stores it at `path` unless another process got there first, in
/// which case that one wins and is returned: never two keys, never a half-written one.
fn create_private_key(path: &Path) -> Result<String, Error> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| Error::Key(e.to_string()))?;
    let pem = pair.serialize_pem();
    let tmp = temp_path(path);
    let result = write_new(&tmp, pem.as_bytes(), 0o600).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the token signing key");
            Ok(pem)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::read_to_string(path).map_err(|e| Error::Key(format!("cannot read {}: {e}", path.display())))
        }
        Err(e) => Err(Error::Key(format!("cannot create {}: {e}", path.display()))),
    }
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

/// Creates `path` (which must not exist) with `mode` from the first byte on, so the
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
    use jsonwebtoken::{DecodingKey, Validation};

    #[derive(serde::Deserialize)]
    struct Decoded {
        sub: String,
        iss: String,
        exp: i64,
    }

    #[tokio::test]
    async fn signs_tokens_that_the_public_key_verifies_and_keeps_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(dir.path()).await.unwrap();
        let now = meshwork_service_kit::time::now_millis() / 1000;
        let (token, exp) = signer.sign("user-1", now).unwrap();
        assert_eq!(exp, now + 3600);

        let public = fs::read(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[TOKEN_ISSUER]);
        let data =
            jsonwebtoken::decode::<Decoded>(&token, &DecodingKey::from_ed_pem(&public).unwrap(), &validation).unwrap();
        assert_eq!(data.claims.sub, "user-1");
        assert_eq!(data.claims.iss, TOKEN_ISSUER);
        assert_eq!(data.claims.exp, exp);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(PRIVATE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // A restart keeps the key: the old token still verifies against the new public file.
        let private = fs::read(dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        let _again = Signer::load_or_create(dir.path()).await.unwrap();
        assert_eq!(fs::read(dir.path().join(PRIVATE_KEY_FILE)).unwrap(), private);
        let public = fs::read(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert!(
            jsonwebtoken::decode::<Decoded>(&token, &DecodingKey::from_ed_pem(&public).unwrap(), &validation).is_ok()
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary files left");
    }
}
