//! The users service's verification keys, cached by `kid`, following its key
//! rotation: a token whose `kid` is unknown makes the cache fetch the JWKS
//! again (`UserService/GetJwks`, through the gateway's sidecar), at most once
//! per [`REFETCH_INTERVAL`], one fetch at a time however many requests ask,
//! while the known keys keep working without any fetch. A request reads the
//! keys with one `ArcSwap` load; only a miss touches the lock.
//!
//! Each fetch replaces the whole set, so a key the users service stops
//! publishing stops verifying at the next fetch.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use meshwork_proto::users::{GetJwksRequest, Jwk, Jwks, user_service_client::UserServiceClient};
use tokio::{sync::Mutex, time::Instant};
use tonic::transport::Channel;

use super::AuthError;

/// The least time between two fetches of the JWKS: tokens with made-up kids
/// cannot turn the gateway into a flood on the users service.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys kept from one JWKS; the users service publishes two or three.
pub const MAX_KEYS: usize = 64;

/// The keys of one fetch.
#[derive(Default)]
pub struct KeySet {
    /// How many fetches succeeded before this set; 0 before the first.
    generation: u64,
    keys: HashMap<String, DecodingKey>,
}

impl KeySet {
    /// Which fetch this set came from; see [`KeyCache::refresh_after`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// The usable Ed25519 signing keys of `jwks`; others (another key type,
    /// an encryption key, a bad `x`) are skipped with a warning.
    pub fn from_jwks(jwks: &Jwks, generation: u64) -> KeySet {
        let mut keys = HashMap::new();
        for jwk in jwks.keys.iter().take(MAX_KEYS) {
            match decoding_key(jwk) {
                Ok(key) => {
                    keys.insert(jwk.kid.clone(), key);
                }
                Err(why) => tracing::warn!(kid = %jwk.kid, "skipping a key of the users service's JWKS: {why}"),
            }
        }
        KeySet { generation, keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

fn decoding_key(jwk: &Jwk) -> Result<DecodingKey, String> {
    if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
        return Err(format!("kty '{}' crv '{}' is not an Ed25519 key", jwk.kty, jwk.crv));
    }
    if !(jwk.alg.is_empty() || jwk.alg == "EdDSA") || !(jwk.r#use.is_empty() || jwk.r#use == "sig") {
        return Err(format!(
            "alg '{}' use '{}' is not for EdDSA signatures",
            jwk.alg, jwk.r#use
        ));
    }
    if jwk.kid.is_empty() {
        return Err("it has no kid".into());
    }
    match URL_SAFE_NO_PAD.decode(&jwk.x) {
        Ok(raw) if raw.len() == 32 => DecodingKey::from_ed_components(&jwk.x).map_err(|e| e.to_string()),
        Ok(raw) => Err(format!("x is {} bytes, not 32", raw.len())),
        Err(e) => Err(format!("x is not base64url: {e}")),
    }
}

/// Where the latest fetch left things, guarded by the single-flight lock.
#[derive(Default)]
struct Fetching {
    last: Option<Instant>,
    /// Why the latest fetch failed, while it is the latest.
    failure: Option<String>,
}

/// The cache: the current set, and the one lock that fetches take.
pub struct KeyCache {
    current: ArcSwap<KeySet>,
    fetching: Mutex<Fetching>,
    client: UserServiceClient<Channel>,
    refetch_interval: Duration,
    fetches: AtomicU64,
}

impl KeyCache {
    pub fn new(users: Channel, refetch_interval: Duration) -> Self {
        KeyCache {
            current: ArcSwap::from_pointee(KeySet::default()),
            fetching: Mutex::new(Fetching::default()),
            client: UserServiceClient::new(users),
            refetch_interval,
            fetches: AtomicU64::new(0),
        }
    }

    /// The keys now, without waiting for anything.
    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// How many times the JWKS was asked for (successfully or not).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Makes sure the keys are newer than set `seen` (a generation the caller found
    /// lacking): fetches them unless another request did while this one
    /// waited, or the latest fetch was less than the refetch interval ago (then
    /// that fetch's outcome stands). `Err` only when the keys could not be
    /// had; a kid still missing afterwards is the caller's to report.
    pub async fn refresh_after(&self, seen: u64) -> Result<(), AuthError> {
        let mut fetching = self.fetching.lock().await;
        if self.current.load().generation != seen {
            return Ok(());
        }
        if let Some(last) = fetching.last
            && last.elapsed() < self.refetch_interval
        {
            return match &fetching.failure {
                Some(why) => Err(AuthError::KeysUnavailable(why.clone())),
                None => Ok(()),
            };
        }
        fetching.last = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch().await {
            Ok(jwks) => {
                let set = KeySet::from_jwks(&jwks, seen + 1);
                tracing::info!(keys = set.len(), "fetched the users service's token keys");
                self.current.store(Arc::new(set));
                fetching.failure = None;
                Ok(())
            }
            Err(why) => {
                tracing::warn!("cannot fetch the users service's token keys: {why}");
                fetching.failure = Some(why.clone());
                Err(AuthError::KeysUnavailable(why))
            }
        }
    }

    async fn fetch(&self) -> Result<Jwks, String> {
        let mut request = tonic::Request::new(GetJwksRequest {});
        request.set_timeout(FETCH_TIMEOUT);
        let mut client = self.client.clone();
        match tokio::time::timeout(FETCH_TIMEOUT, client.get_jwks(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(format!(
                "users GetJwks answered {:?}: {}",
                status.code(),
                status.message()
            )),
            Err(_) => Err(format!("users GetJwks did not answer within {FETCH_TIMEOUT:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(x: &str) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: x.into(),
            kid: "k".into(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }
    }

    fn refused(jwk: &Jwk) -> String {
        decoding_key(jwk).err().expect("refused")
    }

    #[test]
    fn only_ed25519_signing_keys_are_kept() {
        let good = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        assert!(decoding_key(&jwk(good)).is_ok());
        assert!(
            decoding_key(&Jwk {
                alg: String::new(),
                r#use: String::new(),
                ..jwk(good)
            })
            .is_ok()
        );
        assert!(
            refused(&Jwk {
                kty: "RSA".into(),
                ..jwk(good)
            })
            .contains("not an Ed25519")
        );
        assert!(
            refused(&Jwk {
                r#use: "enc".into(),
                ..jwk(good)
            })
            .contains("not for EdDSA")
        );
        assert!(
            refused(&Jwk {
                kid: String::new(),
                ..jwk(good)
            })
            .contains("no kid")
        );
        assert!(refused(&jwk("AAAA")).contains("3 bytes"));
        assert!(refused(&jwk("!!")).contains("base64url"));
        let set = KeySet::from_jwks(
            &Jwks {
                keys: vec![
                    jwk(good),
                    Jwk {
                        kid: "bad".into(),
                        ..jwk("AAAA")
                    },
                ],
            },
            1,
        );
        assert_eq!(set.len(), 1);
        assert!(set.get("k").is_some() && set.get("bad").is_none());
    }
}
