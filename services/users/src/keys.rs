//! Signing access tokens, and the key set behind them: the newest key signs,
//! every key whose tokens may still be valid is published (`GetJwks`), and a
//! new key is made on an interval while running (rotation).
//!
//! A key retired at time T (when its successor was made) signed its last
//! token at T, which expires at T + token TTL; it stays published until then
//! plus [`PUBLISH_MARGIN`] for verifiers' clock leeway, and is deleted at the
//! first rotation after that. Each key's `kid` is its RFC 7638 thumbprint, so
//! replicas sharing the data dir agree on it without talking to each other.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use meshwork_proto::users::{Jwk, Jwks};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    Error,
    key_files::{self, StoredKey},
    settings::{Settings, TOKEN_ISSUER},
};

/// How long past its last token's expiry a retired key stays published: more
/// than any verifier's leeway on `exp`.
pub const PUBLISH_MARGIN: Duration = Duration::from_secs(60);

/// One signing key, parsed once.
struct Key {
    created_ms: i64,
    encoding: EncodingKey,
    /// The JWT header every token of this key carries (`alg`, `typ`, `kid`).
    header: Header,
    jwk: Jwk,
    public_pem: String,
}

/// The keys, oldest first; never empty.
struct KeyRing {
    keys: Vec<Arc<Key>>,
}

impl KeyRing {
    fn newest(&self) -> &Arc<Key> {
        // `Signer` only ever stores a ring built by `build`, which refuses an empty one.
        &self.keys[self.keys.len() - 1]
    }

    /// Whether the key at `i` may still have valid tokens at `now_ms`.
    fn published(&self, i: usize, now_ms: i64, ttl: Duration) -> bool {
        match self.keys.get(i + 1) {
            None => true,
            Some(successor) => {
                let keep = (ttl + PUBLISH_MARGIN).as_millis() as i64;
                now_ms < successor.created_ms.saturating_add(keep)
            }
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    roles: &'a [String],
    /// OAuth tokens only (space-separated); a login token may do everything.
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
}

/// Signs tokens with the newest key and publishes the set.
pub struct Signer {
    data_dir: PathBuf,
    ring: ArcSwap<KeyRing>,
    audience: String,
    ttl: Duration,
    /// One reload or rotation at a time (they read and write the folder).
    changing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// Loads the keys from `data_dir`, creating the first on first start.
    pub async fn load_or_create(data_dir: &Path, settings: &Settings) -> Result<Self, Error> {
        let dir = data_dir.to_path_buf();
        let now = now_ms();
        let stored = blocking(move || key_files::load_or_create(&dir, now)).await?;
        let ring = build(&[], stored)?;
        write_public(data_dir, &ring).await?;
        Ok(Signer {
            data_dir: data_dir.to_path_buf(),
            ring: ArcSwap::from_pointee(ring),
            audience: settings.audience.clone(),
            ttl: settings.token_ttl,
            changing: tokio::sync::Mutex::new(()),
        })
    }

    /// A compact JWT for `user_id` with `roles`, issued at `now_secs`; returns
    /// it with its expiry (Unix seconds).
    pub fn sign(&self, user_id: &str, roles: &[String], now_secs: i64) -> Result<(String, i64), Error> {
        self.sign_for(user_id, roles, now_secs, &self.audience, "")
    }

    /// [`sign`](Self::sign) for another audience (an OAuth resource, RFC 8707)
    /// and with a scope claim (none when empty).
    pub fn sign_for(
        &self,
        user_id: &str,
        roles: &[String],
        now_secs: i64,
        audience: &str,
        scope: &str,
    ) -> Result<(String, i64), Error> {
        let ring = self.ring.load();
        let key = ring.newest();
        let exp = now_secs.saturating_add(self.ttl.as_secs() as i64);
        let claims = Claims {
            iss: TOKEN_ISSUER,
            sub: user_id,
            aud: audience,
            iat: now_secs,
            nbf: now_secs,
            exp,
            roles,
            scope,
        };
        Ok((jsonwebtoken::encode(&key.header, &claims, &key.encoding)?, exp))
    }

    /// The published keys, newest first, after reading the folder again so a
    /// key another replica made is included.
    pub async fn jwks(&self) -> Result<Jwks, Error> {
        self.reload().await?;
        let ring = self.ring.load();
        let now = now_ms();
        let keys = (0..ring.keys.len())
            .rev()
            .filter(|&i| ring.published(i, now, self.ttl))
            .map(|i| ring.keys[i].jwk.clone())
            .collect();
        Ok(Jwks { keys })
    }

    /// Re-reads the folder (keys made or deleted by another replica).
    async fn reload(&self) -> Result<(), Error> {
        let _one = self.changing.lock().await;
        let dir = self.data_dir.join(key_files::KEYS_DIR);
        let stored = blocking(move || key_files::list(&dir)).await?;
        if stored.is_empty() {
            // Someone emptied the folder: keep signing with what we have.
            return Ok(());
        }
        let ring = build(&self.ring.load().keys, stored)?;
        self.install(ring).await
    }

    /// Makes `ring` the current one; the public key file follows its newest key.
    async fn install(&self, ring: KeyRing) -> Result<(), Error> {
        let changed = ring.newest().created_ms != self.ring.load().newest().created_ms;
        if changed {
            write_public(&self.data_dir, &ring).await?;
        }
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// Makes a new signing key unless the newest is younger than `every`
    /// (another replica rotated already), and deletes keys no token can need.
    pub async fn rotate(&self, every: Duration) -> Result<(), Error> {
        let _one = self.changing.lock().await;
        let data_dir = self.data_dir.clone();
        let now = now_ms();
        let ttl = self.ttl;
        let old = self.ring.load_full();
        let (ring, created) = blocking(move || {
            let mut stored = key_files::list(&data_dir.join(key_files::KEYS_DIR))?;
            let newest = stored.last().map_or(i64::MIN, |k| k.created_ms);
            // A tenth of slack, so a tick that comes a little early still rotates.
            let due = now.saturating_sub(newest) + (every.as_millis() / 10) as i64 >= every.as_millis() as i64;
            if due {
                stored.push(key_files::create(&data_dir, now)?);
            }
            let ring = build(&old.keys, stored)?;
            for i in 0..ring.keys.len() {
                if !ring.published(i, now, ttl) {
                    key_files::remove(&data_dir, ring.keys[i].created_ms)?;
                }
            }
            let kept = (0..ring.keys.len())
                .filter(|&i| ring.published(i, now, ttl))
                .map(|i| ring.keys[i].clone())
                .collect();
            Ok((KeyRing { keys: kept }, due))
        })
        .await?;
        if created {
            tracing::info!(kid = %ring.newest().jwk.kid, keys = ring.keys.len(), "rotated the token signing key");
        }
        self.install(ring).await
    }
}

/// Rotates `signer`'s key every `every` until the signer is dropped (the
/// first tick comes at once, so a key older than `every` is replaced at start).
pub fn spawn_rotation(signer: &Arc<Signer>, every: Duration) {
    let signer = Arc::downgrade(signer);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(signer) = signer.upgrade() else { break };
            if let Err(e) = signer.rotate(every).await {
                tracing::warn!(error = %e, "key rotation failed; signing with the current key");
            }
        }
    });
}

/// A ring from `stored`, reusing the keys of `known` already parsed.
fn build(known: &[Arc<Key>], stored: Vec<StoredKey>) -> Result<KeyRing, Error> {
    if stored.is_empty() {
        return Err(Error::Key("no signing key".into()));
    }
    let keys = stored
        .into_iter()
        .map(|s| match known.iter().find(|k| k.created_ms == s.created_ms) {
            Some(k) => Ok(k.clone()),
            None => parse(s).map(Arc::new),
        })
        .collect::<Result<_, _>>()?;
    Ok(KeyRing { keys })
}

fn parse(stored: StoredKey) -> Result<Key, Error> {
    let name = format!("{}/{}.pem", key_files::KEYS_DIR, stored.created_ms);
    let pair = rcgen::KeyPair::from_pem(&stored.pem).map_err(|e| Error::Key(format!("bad key in {name}: {e}")))?;
    if !pair.is_compatible(&rcgen::PKCS_ED25519) {
        return Err(Error::Key(format!("{name} does not hold an Ed25519 key")));
    }
    let x = URL_SAFE_NO_PAD.encode(pair.public_key_raw());
    let kid = thumbprint(&x);
    let encoding = EncodingKey::from_ed_pem(stored.pem.as_bytes())
        .map_err(|e| Error::Key(format!("unusable key in {name}: {e}")))?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.clone());
    Ok(Key {
        created_ms: stored.created_ms,
        encoding,
        header,
        jwk: Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x,
            kid,
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        },
        public_pem: pair.public_key_pem(),
    })
}

/// The RFC 7638 thumbprint of an Ed25519 JWK: SHA-256 over its required
/// members in lexicographic order, base64url.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

async fn write_public(data_dir: &Path, ring: &KeyRing) -> Result<(), Error> {
    let dir = data_dir.to_path_buf();
    let pem = ring.newest().public_pem.clone();
    blocking(move || key_files::write_public(&dir, &pem)).await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Key(e.to_string()))?
}

fn now_ms() -> i64 {
    meshwork_service_kit::time::now_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[derive(serde::Deserialize)]
    struct Decoded {
        sub: String,
        aud: String,
        nbf: i64,
        exp: i64,
        roles: Vec<String>,
    }

    fn decode(token: &str, jwk: &Jwk) -> jsonwebtoken::errors::Result<Decoded> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[TOKEN_ISSUER]);
        validation.set_audience(&["meshwork"]);
        let key = DecodingKey::from_ed_components(&jwk.x)?;
        jsonwebtoken::decode::<Decoded>(token, &key, &validation).map(|d| d.claims)
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.3.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[tokio::test]
    async fn signs_with_the_newest_key_and_publishes_the_retired_one_for_a_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            token_ttl: Duration::from_secs(5),
            ..Settings::default()
        };
        let signer = Signer::load_or_create(dir.path(), &settings).await.unwrap();
        let now = now_ms() / 1000;
        let roles = vec!["admin".to_string()];
        let (old_token, exp) = signer.sign("user-1", &roles, now).unwrap();
        assert_eq!(exp, now + 5);
        let first = signer.jwks().await.unwrap().keys;
        assert_eq!(first.len(), 1);
        assert_eq!(
            jsonwebtoken::decode_header(&old_token).unwrap().kid.as_deref(),
            Some(first[0].kid.as_str())
        );
        let claims = decode(&old_token, &first[0]).unwrap();
        assert_eq!((claims.sub.as_str(), claims.aud.as_str()), ("user-1", "meshwork"));
        assert_eq!((claims.nbf, claims.exp, claims.roles), (now, exp, roles));

        // Not due yet: the newest key is younger than the interval.
        signer.rotate(Duration::from_secs(3600)).await.unwrap();
        assert_eq!(signer.jwks().await.unwrap().keys, first);

        signer.rotate(Duration::from_millis(1)).await.unwrap();
        let both = signer.jwks().await.unwrap().keys;
        assert_eq!(both.len(), 2, "{both:?}");
        assert_eq!(both[1], first[0], "the old key is still published, after the new one");
        let (new_token, _) = signer.sign("user-1", &[], now).unwrap();
        let new_kid = jsonwebtoken::decode_header(&new_token).unwrap().kid.unwrap();
        assert_eq!(new_kid, both[0].kid);
        assert!(decode(&new_token, &both[0]).is_ok());
        assert!(
            decode(&new_token, &both[1]).is_err(),
            "each key verifies only its own tokens"
        );

        // A restart finds both, and the public key file is the new key's.
        let again = Signer::load_or_create(dir.path(), &settings).await.unwrap();
        assert_eq!(again.jwks().await.unwrap().keys, both);
        let public = std::fs::read(dir.path().join(key_files::PUBLIC_KEY_FILE)).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["meshwork"]);
        assert!(
            jsonwebtoken::decode::<Decoded>(&new_token, &DecodingKey::from_ed_pem(&public).unwrap(), &validation)
                .is_ok()
        );

        // Once the old key's last token is past its expiry and the margin, a
        // rotation deletes it.
        let ring = signer.ring.load();
        let later = ring.keys[1].created_ms + (settings.token_ttl + PUBLISH_MARGIN).as_millis() as i64;
        assert!(ring.published(0, later - 1, settings.token_ttl));
        assert!(!ring.published(0, later, settings.token_ttl));
        assert!(ring.published(1, i64::MAX, settings.token_ttl), "the newest always is");
    }
}
