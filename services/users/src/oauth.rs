//! OAuth 2.1's part in the users service: public clients (RFC 7591 dynamic
//! registration), one-time authorization codes bound to a client, a redirect
//! URI, a PKCE challenge (S256) and a resource (RFC 8707), and their exchange
//! for an access token whose audience is that resource. The HTTP side (the
//! metadata, the login page, the form posts and redirects) is the gateway's
//! (`gateway/src/oauth`); this keeps what must be shared by every replica, in
//! the service's database.
//!
//! Codes are stored as their SHA-256 only, and used at most once: the exchange
//! marks a code used in the same statement that reads it.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use meshwork_service_kit::{
    db::{Db, sqlx},
    time::now_millis,
};
use sha2::{Digest, Sha256};

use crate::Error;

/// The scopes a token may carry: reading (browse, one's own cart and orders)
/// and changing things (cart, checkout, refunds, preferences). A token from
/// `Login` has no scope claim and may do both.
pub const SCOPES: [&str; 2] = ["shop:read", "shop:write"];

/// How long a code may wait for its exchange (RFC 6749 says at most ten minutes).
pub const CODE_TTL_MS: i64 = 60_000;
const MAX_REDIRECT_URIS: usize = 10;
const MAX_NAME_CHARS: usize = 100;

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub created_at_ms: i64,
}

/// What a code was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub user_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub resource: String,
    /// Space-separated, from [`SCOPES`].
    pub scope: String,
}

/// The scope granted for `requested` (space-separated): every one of
/// [`SCOPES`] when none is asked for, else what was asked, each known.
pub fn granted_scope(requested: &str) -> Result<String, Error> {
    let asked: Vec<&str> = requested.split_whitespace().collect();
    if asked.is_empty() {
        return Ok(SCOPES.join(" "));
    }
    if let Some(unknown) = asked.iter().find(|s| !SCOPES.contains(s)) {
        return Err(Error::invalid(
            "scope",
            format!("'{unknown}' is not one of {}", SCOPES.join(", ")),
        ));
    }
    let mut granted: Vec<&str> = SCOPES.iter().copied().filter(|s| asked.contains(s)).collect();
    granted.dedup();
    Ok(granted.join(" "))
}

/// Checks a client's registration: a name, and 1 to 10 redirect URIs, each
/// https or http on a loopback host (OAuth 2.1 §8.4.2), without a fragment.
pub fn check_registration(name: &str, redirect_uris: &[String]) -> Result<(), Error> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid(
            "client_name",
            format!("is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if redirect_uris.is_empty() || redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(Error::invalid(
            "redirect_uris",
            format!("must hold 1 to {MAX_REDIRECT_URIS} URIs, got {}", redirect_uris.len()),
        ));
    }
    for uri in redirect_uris {
        let bad = |why: &str| Err(Error::invalid("redirect_uris", format!("'{uri}' {why}")));
        if uri.contains('#') {
            return bad("has a fragment");
        }
        if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("contains whitespace");
        }
        let Some(rest) = uri.strip_prefix("https://").or_else(|| uri.strip_prefix("http://")) else {
            return bad("is neither https nor http");
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        if host.is_empty() {
            return bad("has no host");
        }
        if uri.starts_with("http://") && !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
            return bad("is plain http on a host other than the loopback (localhost, 127.0.0.1, [::1])");
        }
    }
    Ok(())
}

/// Checks a PKCE challenge: S256 and 43 base64url characters (RFC 7636 §4.2).
pub fn check_challenge(challenge: &str, method: &str) -> Result<(), Error> {
    if method != "S256" {
        return Err(Error::invalid(
            "code_challenge_method",
            format!("must be S256, got '{method}'"),
        ));
    }
    if challenge.len() != 43 || URL_SAFE_NO_PAD.decode(challenge).is_err() {
        return Err(Error::invalid(
            "code_challenge",
            "must be BASE64URL(SHA-256(verifier)): 43 characters",
        ));
    }
    Ok(())
}

/// Whether `verifier` answers `challenge` (S256).
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    // RFC 7636 §4.1: 43 to 128 characters of [A-Za-z0-9-._~].
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

fn hash(code: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(code.as_bytes()))
}

pub async fn insert_client(db: &Db, name: &str, redirect_uris: &[String]) -> Result<Client, Error> {
    let client = Client {
        client_id: uuid::Uuid::new_v4().to_string(),
        client_name: name.to_owned(),
        redirect_uris: redirect_uris.to_vec(),
        created_at_ms: now_millis(),
    };
    sqlx::query(
        "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, created_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(&client.client_id)
    .bind(&client.client_name)
    .bind(client.redirect_uris.join("\n"))
    .bind(client.created_at_ms)
    .execute(db.pool())
    .await?;
    Ok(client)
}

pub async fn client(db: &Db, client_id: &str) -> Result<Client, Error> {
    let row: Option<(String, String, String, i64)> = sqlx::query_as(
        "SELECT client_id, client_name, redirect_uris, created_at_ms FROM oauth_clients WHERE client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(db.pool())
    .await?;
    let (client_id, client_name, uris, created_at_ms) =
        row.ok_or_else(|| Error::UnknownClient(client_id.to_owned()))?;
    Ok(Client {
        client_id,
        client_name,
        redirect_uris: uris.lines().map(String::from).collect(),
        created_at_ms,
    })
}

/// Stores a new code for `grant` and returns it (32 random bytes, base64url).
pub async fn insert_code(db: &Db, grant: &Grant) -> Result<String, Error> {
    let code = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    // Codes past use stay an hour (a replay then says "used", not "unknown").
    sqlx::query("DELETE FROM oauth_codes WHERE expires_at_ms < $1")
        .bind(now_millis() - 3_600_000)
        .execute(db.pool())
        .await?;
    sqlx::query(
        "INSERT INTO oauth_codes (code_hash, client_id, user_id, redirect_uri, code_challenge, resource, scope, expires_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(hash(&code))
    .bind(&grant.client_id)
    .bind(&grant.user_id)
    .bind(&grant.redirect_uri)
    .bind(&grant.code_challenge)
    .bind(&grant.resource)
    .bind(&grant.scope)
    .bind(now_millis() + CODE_TTL_MS)
    .execute(db.pool())
    .await?;
    Ok(code)
}

/// Takes `code` (once: it is marked used as it is read); what it was issued
/// for, if it was unused and unexpired.
pub async fn take_code(db: &Db, code: &str) -> Result<Grant, Error> {
    let row: Option<(String, String, String, String, String, String, i64)> = sqlx::query_as(
        "UPDATE oauth_codes SET used = 1 WHERE code_hash = $1 AND used = 0
         RETURNING user_id, client_id, redirect_uri, code_challenge, resource, scope, expires_at_ms",
    )
    .bind(hash(code))
    .fetch_optional(db.pool())
    .await?;
    let (user_id, client_id, redirect_uri, code_challenge, resource, scope, expires_at_ms) =
        row.ok_or_else(|| Error::InvalidGrant("the code is unknown or was used already".into()))?;
    if expires_at_ms < now_millis() {
        return Err(Error::InvalidGrant("the code has expired".into()));
    }
    Ok(Grant {
        user_id,
        client_id,
        redirect_uri,
        code_challenge,
        resource,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_or_loopback() {
        let ok = |u: &str| check_registration("agent", &[u.to_owned()]).is_ok();
        assert!(ok("https://agent.example/callback"));
        assert!(ok("http://127.0.0.1:33418/callback"));
        assert!(ok("http://localhost/cb"));
        assert!(!ok("http://agent.example/callback"));
        assert!(!ok("https://agent.example/cb#frag"));
        assert!(!ok("agent://callback"));
        assert!(check_registration("agent", &[]).is_err());
    }

    #[test]
    fn scopes_are_granted_as_asked_or_all() {
        assert_eq!(granted_scope("").unwrap(), "shop:read shop:write");
        assert_eq!(granted_scope("shop:read").unwrap(), "shop:read");
        assert_eq!(
            granted_scope("shop:write shop:read shop:read").unwrap(),
            "shop:read shop:write"
        );
        assert!(
            granted_scope("admin")
                .unwrap_err()
                .to_string()
                .contains("'admin' is not one of")
        );
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(check_challenge(challenge, "S256").is_ok());
        assert!(check_challenge(challenge, "plain").is_err());
        assert!(verifier_matches(verifier, challenge));
        assert!(!verifier_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        assert!(!verifier_matches("short", challenge));
    }
}
