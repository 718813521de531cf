//! Signing access tokens, and the key set behind them: the newest key signs,
//! every key whose tokens may still be valid is published (`GetJwks`), and a
//! new key is made on an interval while running (rotation).
//!
//! A key retired at time T (when its successor was made) signed its last
//! token at T, which expires at T + token TTL; it stays published until then
//! plus [`PUBLISH_MARGIN`] for verifiers' clock leeway, and is deleted at the
//! first rotation after that. The keys live in the service's database
//! ([`KeyStore`]), so every replica signs and publishes from one set; each
//! re-reads it every [`REFRESH`] (less than the margin), so a replica that
//! did not rotate itself stops signing with a retired key before any
//! verifier can drop it. Each key's `kid` is its RFC 7638 thumbprint, so
//! replicas agree on it without talking to each other.

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
    Error, key_files,
    key_store::{KeyStore, StoredKey},
    settings::{Settings, TOKEN_ISSUER},
};

/// How long past its last token's expiry a retired key stays published: more
/// than any verifier's leeway on `exp`.
pub const PUBLISH_MARGIN: Duration = Duration::from_secs(60);
/// How often each replica re-reads the key set (keys another replica made
/// or deleted). Less than [`PUBLISH_MARGIN`]: see the module's description.
pub const REFRESH: Duration = Duration::from_secs(30);

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
    store: KeyStore,
    /// Where the public key file goes.
    data_dir: PathBuf,
    ring: ArcSwap<KeyRing>,
    audience: String,
    ttl: Duration,
    /// One reload or rotation at a time (they read and write the key set).
    changing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// Loads the keys from `store`, creating the first on first start (or
    /// importing those an earlier version left in `data_dir`).
    pub async fn load_or_create(store: KeyStore, data_dir: &Path, settings: &Settings) -> Result<Self, Error> {
        let stored = store.load_or_create(data_dir, now_ms()).await?;
        let ring = build(&[], stored)?;
        write_public(data_dir, &ring).await?;
        Ok(Signer {
            store,
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

    /// The published keys, newest first, after reading the set again so a
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

    /// Re-reads the key set (keys made or deleted by another replica).
    pub async fn reload(&self) -> Result<(), Error> {
        let _one = self.changing.lock().await;
        let stored = self.store.list().await?;
        if stored.is_empty() {
            // Someone emptied the table: keep signing with what we have.
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
    /// (less `slack`, so a tick that comes a little early still rotates) or
    /// another replica rotated already, and deletes keys no token can need.
    pub async fn rotate(&self, every: Duration, slack: Duration) -> Result<(), Error> {
        let _one = self.changing.lock().await;
        let now = now_ms();
        let mut stored = self.store.list().await?;
        let newest = stored.last().map_or(i64::MIN, |k| k.created_ms);
        let due = now.saturating_sub(newest).saturating_add(slack.as_millis() as i64) >= every.as_millis() as i64;
        if due {
            stored.push(self.store.create(now).await?);
        }
        let ring = build(&self.ring.load().keys, stored)?;
        let mut kept = Vec::with_capacity(ring.keys.len());
        for (i, key) in ring.keys.iter().enumerate() {
            if ring.published(i, now, self.ttl) {
                kept.push(key.clone());
            } else {
                self.store.remove(key.created_ms).await?;
            }
        }
        let ring = KeyRing { keys: kept };
        if due {
            tracing::info!(kid = %ring.newest().jwk.kid, keys = ring.keys.len(), "rotated the token signing key");
        }
        self.install(ring).await
    }
}

/// Keeps `signer`'s key set current until the signer is dropped: re-reads
/// it every [`REFRESH`] and, with `rotation`, makes a new key that often
/// (checked on the same ticks; the first comes at once, so a key older than
/// the interval is replaced at start).
pub fn spawn_upkeep(signer: &Arc<Signer>, rotation: Option<Duration>) {
    let signer = Arc::downgrade(signer);
    let tick = rotation.map_or(REFRESH, |every| every.min(REFRESH));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(signer) = signer.upgrade() else { break };
            let done = match rotation {
                Some(every) => signer.rotate(every, tick / 10).await,
                None => signer.reload().await,
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "cannot read or rotate the signing keys; signing with the current key");
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
    let name = format!("the signing key created at {} ms", stored.created_ms);
    let pair = rcgen::KeyPair::from_pem(&stored.pem).map_err(|e| Error::Key(format!("bad key in {name}: {e}")))?;
    if !pair.is_compatible(&rcgen::PKCS_ED25519) {
        return Err(Error::Key(format!("{name} is not an Ed25519 key")));
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
    use crate::{NAME, db::Store};
    use jsonwebtoken::{DecodingKey, Validation};
    use meshwork_service_kit::Database;

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

    /// A signer whose keys are in the SQLite database `db_dir/users.db` and
    /// whose public key file goes in `data_dir`.
    async fn signer(db_dir: &Path, data_dir: &Path, settings: &Settings) -> Signer {
        let store = Store::open(&Database::sqlite_in(db_dir, NAME)).await.unwrap();
        Signer::load_or_create(store.keys(), data_dir, settings).await.unwrap()
    }

    /// The key among `jwks` that `token` names.
    fn key_of<'a>(token: &str, jwks: &'a [Jwk]) -> Option<&'a Jwk> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        jwks.iter().find(|k| k.kid == kid)
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
        let signer = signer(dir.path(), dir.path(), &settings).await;
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
        signer.rotate(Duration::from_secs(3600), Duration::ZERO).await.unwrap();
        assert_eq!(signer.jwks().await.unwrap().keys, first);

        signer.rotate(Duration::from_millis(1), Duration::ZERO).await.unwrap();
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
        let again = self::signer(dir.path(), dir.path(), &settings).await;
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

    /// Two replicas with data folders of their own (two pods) on one
    /// database: one key set, whichever of them rotates.
    #[tokio::test]
    async fn replicas_on_one_database_sign_and_publish_one_key_set() {
        let (db, pod_a, pod_b) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let settings = Settings::default();
        let a = signer(db.path(), pod_a.path(), &settings).await;
        let b = signer(db.path(), pod_b.path(), &settings).await;
        let jwks = a.jwks().await.unwrap().keys;
        assert_eq!(jwks.len(), 1, "the second replica found the first one's key: {jwks:?}");
        assert_eq!(b.jwks().await.unwrap().keys, jwks);
        let (token, _) = b.sign("user-1", &[], now_ms() / 1000).unwrap();
        assert!(decode(&token, key_of(&token, &jwks).expect("kid published by a")).is_ok());

        // A rotates; B publishes the new key at once and, once it re-reads
        // the set (every REFRESH), signs with it.
        a.rotate(Duration::from_millis(1), Duration::ZERO).await.unwrap();
        let rotated = a.jwks().await.unwrap().keys;
        assert_eq!(rotated.len(), 2);
        b.reload().await.unwrap();
        assert_eq!(b.jwks().await.unwrap().keys, rotated);
        let (token, _) = b.sign("user-1", &[], now_ms() / 1000).unwrap();
        assert_eq!(key_of(&token, &rotated), Some(&rotated[0]), "b signs with a's new key");
        assert!(
            std::fs::read(pod_b.path().join(key_files::PUBLIC_KEY_FILE)).unwrap()
                == std::fs::read(pod_a.path().join(key_files::PUBLIC_KEY_FILE)).unwrap(),
            "both pods' public key files follow the new key"
        );
    }

    #[tokio::test]
    async fn the_key_files_of_an_earlier_version_are_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem();
        std::fs::create_dir(dir.path().join(key_files::KEYS_DIR)).unwrap();
        std::fs::write(dir.path().join(key_files::KEYS_DIR).join("1000.pem"), &pem).unwrap();
        let settings = Settings::default();
        let imported = signer(dir.path(), dir.path(), &settings).await;
        let ring = imported.ring.load();
        assert_eq!(ring.keys.len(), 1);
        assert_eq!(ring.newest().created_ms, 1000, "the old key signs on");
        drop(ring);
        // Deleting the old file changes nothing: the key lives in the database now.
        std::fs::remove_dir_all(dir.path().join(key_files::KEYS_DIR)).unwrap();
        let again = signer(dir.path(), dir.path(), &settings).await;
        assert_eq!(again.jwks().await.unwrap().keys, imported.jwks().await.unwrap().keys);
    }
}
