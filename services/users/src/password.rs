//! argon2id password hashing, run on the blocking pool: one hash takes tens of
//! milliseconds of CPU, which must not stall the async workers.

use std::sync::OnceLock;

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
};

use crate::Error;

/// Hashes `password` with argon2id (the crate's default: m=19 MiB, t=2, p=1) and a
/// random salt; returns the PHC string, which carries the parameters with it.
pub async fn hash(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .map_err(|e| Error::Hash(e.to_string()))?
}

/// Checks `password` against a stored PHC string. With no stored hash (unknown email)
/// a dummy hash is checked instead, so that the answer takes as long either way and
/// does not tell which emails have accounts.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, Error> {
    tokio::task::spawn_blocking(move || {
        let (phc, real) = match &stored {
            Some(phc) => (phc.as_str(), true),
            None => (dummy_hash()?, false),
        };
        let parsed = PasswordHash::new(phc).map_err(|e| Error::Hash(e.to_string()))?;
        let matches = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        Ok(real && matches)
    })
    .await
    .map_err(|e| Error::Hash(e.to_string()))?
}

fn hash_now(password: &str) -> Result<String, Error> {
    // 16 random bytes from the OS-seeded thread RNG, the salt length argon2 recommends.
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| Error::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

fn dummy_hash() -> Result<&'static str, Error> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(h) = DUMMY.get() {
        return Ok(h);
    }
    let h = hash_now("not a real password")?;
    Ok(DUMMY.get_or_init(|| h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let phc = hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify("correct horse".into(), Some(phc.clone())).await.unwrap());
        assert!(!verify("wrong horse".into(), Some(phc)).await.unwrap());
        assert!(
            !verify("not a real password".into(), None).await.unwrap(),
            "the dummy never matches"
        );
    }
}
