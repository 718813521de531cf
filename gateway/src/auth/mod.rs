//! Who is calling: the users service's access tokens (EdDSA JWT), verified
//! at the edge against the keys the users service publishes (JWKS, by `kid`).
//!
//! The rest of the gateway sees only the [`Authenticator`]:
//! [`authenticate`](Authenticator::authenticate) turns a request's headers
//! into the verified [`Principal`] (or `None` without a token), or says why
//! not; [`authorize`](Authenticator::authorize) applies `[gateway.auth]`'s
//! `public` and `roles` to a method. Each [`AuthError`] knows its HTTP status
//! (401, 403, 503), its gRPC code, its `WWW-Authenticate` challenge and its
//! metrics label.
//!
//! Parts: `token` reads and verifies one token (synchronous, fuzzed),
//! `jwks` caches the keys and follows rotation, `policy` says what a method
//! needs, `error` the reasons.

mod error;
mod jwks;
mod policy;
pub(crate) mod token;

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, header::AUTHORIZATION};
use jsonwebtoken::Validation;
use tonic::transport::Channel;

pub use error::{AuthError, REALM};
pub use jwks::{FETCH_TIMEOUT, MAX_KEYS, REFETCH_INTERVAL};
pub use policy::Access;
pub use token::MAX_TOKEN_BYTES;

use jwks::KeyCache;
use policy::Policy;

/// The verified caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: the user id the gateway sends into the mesh.
    pub user_id: String,
    /// The token's `roles` claim.
    pub roles: Vec<String>,
    /// The token's `scope` claim, split on spaces.
    pub scopes: Vec<String>,
}

/// Verifies tokens and applies the auth policy; cheap to clone (shared state).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    keys: KeyCache,
    /// For the gateway's own audience (`[gateway.auth] audience`).
    validation: Validation,
    /// For the MCP resource: tokens issued for it (RFC 8707, by the gateway's
    /// authorization server) or for the gateway's audience.
    resource_validation: Validation,
    policy: Policy,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys", &self.inner.keys.current().len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Checks tokens against `auth` (issuer, audience, leeway) with the keys
    /// that `users` (a channel to the gateway's sidecar) serves from
    /// `shop.users.v1.UserService/GetJwks`. Nothing is fetched yet: the first
    /// token fetches the keys, or call [`preload`](Self::preload).
    pub fn new(auth: &meshwork_config::Auth, users: Channel) -> Self {
        Self::with_refetch_interval(auth, users, REFETCH_INTERVAL)
    }

    /// [`new`](Self::new) with another least time between two fetches.
    pub fn with_refetch_interval(auth: &meshwork_config::Auth, users: Channel, interval: Duration) -> Self {
        let validation = token::validation(&auth.issuer, &[&auth.audience], auth.leeway.as_secs());
        Authenticator {
            inner: Arc::new(Inner {
                keys: KeyCache::new(users, interval),
                resource_validation: validation.clone(),
                validation,
                policy: Policy::new(auth),
            }),
        }
    }

    /// Also accepts, at [`authenticate_for_resource`](Self::authenticate_for_resource),
    /// tokens whose audience is `resource` (the MCP endpoint's URI). Call it
    /// before the authenticator is cloned.
    pub fn with_resource(mut self, auth: &meshwork_config::Auth, resource: &str) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                inner.resource_validation =
                    token::validation(&auth.issuer, &[&auth.audience, resource], auth.leeway.as_secs());
            }
            None => tracing::error!(
                "the authenticator was shared before its resource was set; MCP accepts only the gateway's audience"
            ),
        }
        self
    }

    /// The verified caller of a request with `headers`: `Ok(None)` when it
    /// has no `Authorization` header, the principal when its bearer token
    /// verifies, and the reason otherwise. A token whose `kid` is unknown
    /// makes the keys be fetched again (once, shared, rate-limited);
    /// [`AuthError::is_unavailable`] tells when they could not be.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Principal>, AuthError> {
        self.authenticate_with(headers, &self.inner.validation).await
    }

    /// [`authenticate`](Self::authenticate) at the MCP resource: its own
    /// audience is accepted too (see [`with_resource`](Self::with_resource)).
    pub async fn authenticate_for_resource(&self, headers: &HeaderMap) -> Result<Option<Principal>, AuthError> {
        self.authenticate_with(headers, &self.inner.resource_validation).await
    }

    async fn authenticate_with(
        &self,
        headers: &HeaderMap,
        validation: &Validation,
    ) -> Result<Option<Principal>, AuthError> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(AuthError::MalformedHeader("is sent more than once"));
        }
        let token = token::bearer(value)?;
        let kid = token::key_id(token)?;
        self.verify(token, &kid, validation).await.map(Some)
    }

    async fn verify(&self, token: &str, kid: &str, validation: &Validation) -> Result<Principal, AuthError> {
        let generation = {
            let keys = self.inner.keys.current();
            if let Some(key) = keys.get(kid) {
                return token::verify(token, key, validation);
            }
            keys.generation()
        };
        self.inner.keys.refresh_after(generation).await?;
        match self.inner.keys.current().get(kid) {
            Some(key) => token::verify(token, key, validation),
            None => Err(AuthError::UnknownKey(token::printable_kid(kid))),
        }
    }

    /// What the method at `path` (`/pkg.Service/Method`) needs: nothing, a
    /// token, or a role.
    pub fn access(&self, path: &str) -> Access<'_> {
        self.inner.policy.access(path)
    }

    /// Whether `principal` (None: the request had no token) may call the
    /// method at `path`: `Missing` (401) without a token where one is needed,
    /// `Forbidden` (403) without the role.
    pub fn authorize(&self, path: &str, principal: Option<&Principal>) -> Result<(), AuthError> {
        policy::authorize(self.access(path), principal)
    }

    /// Fetches the keys now (at start, say), unless a fetch was made less
    /// than the refetch interval ago; returns how many keys are known.
    pub async fn preload(&self) -> Result<usize, AuthError> {
        let generation = self.inner.keys.current().generation();
        self.inner.keys.refresh_after(generation).await?;
        Ok(self.inner.keys.current().len())
    }

    /// How many times the JWKS was fetched (successfully or not), for metrics.
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.keys.fetches()
    }
}
