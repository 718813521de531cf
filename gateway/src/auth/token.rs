//! Reading a bearer token (RFC 6750) and verifying it as the users service's
//! access token: an EdDSA JWT whose header names its key (`kid`). Everything
//! here is synchronous and reads only what the client sent, bounded before
//! any parsing, so the fuzz target calls the same functions the gateway does.

use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::{AuthError, Principal};

/// The longest token accepted; the users service's are about 400 bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The longest `kid` repeated back in an error message.
const MAX_KID_IN_MESSAGE: usize = 64;

/// The token of an `Authorization: Bearer <token>` header value, checked for
/// the JWT shape (three base64url parts) but not decoded.
pub fn bearer(value: &HeaderValue) -> Result<&str, AuthError> {
    const SCHEME: &str = "bearer ";
    if value.len() > MAX_TOKEN_BYTES + SCHEME.len() + 16 {
        return Err(AuthError::TooLarge);
    }
    let text = value
        .to_str()
        .map_err(|_| AuthError::MalformedHeader("is not ASCII text"))?;
    let Some((scheme, rest)) = text.split_once(' ') else {
        return Err(AuthError::MalformedHeader("is not a Bearer token"));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedHeader("is not a Bearer token"));
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Err(AuthError::MalformedHeader("has an empty Bearer token"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        if part.is_empty() || !part.bytes().all(base64url) {
            return Err(AuthError::MalformedToken(
                "a JWT is three non-empty base64url parts separated by '.'".into(),
            ));
        }
    }
    if parts != 3 {
        return Err(AuthError::MalformedToken(format!(
            "a JWT has three parts separated by '.', this one has {parts}"
        )));
    }
    Ok(token)
}

/// The `kid` of `token`'s header, which must say `alg: EdDSA`.
pub fn key_id(token: &str) -> Result<String, AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::MalformedToken(format!("header: {e}")))?;
    if header.alg != Algorithm::EdDSA {
        return Err(AuthError::MalformedToken(format!(
            "the algorithm is {:?}; tokens here are EdDSA",
            header.alg
        )));
    }
    header
        .kid
        .filter(|kid| !kid.is_empty())
        .ok_or_else(|| AuthError::MalformedToken("the header has no kid".into()))
}

/// What an error message may repeat of a client's `kid`.
pub fn printable_kid(kid: &str) -> Option<String> {
    (kid.len() <= MAX_KID_IN_MESSAGE && kid.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'))
        .then(|| kid.to_owned())
}

/// The rules every token must meet: EdDSA, `exp`, `nbf` (with `leeway_secs`
/// of clock skew), `iss` and `aud` present and as expected, and a `sub`.
pub fn validation(issuer: &str, audiences: &[&str], leeway_secs: u64) -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.leeway = leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[issuer]);
    v.set_audience(audiences);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scope: String,
}

/// Verifies `token`'s signature with `key`, then its claims against `validation`.
pub fn verify(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Principal, AuthError> {
    let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => {
                AuthError::MalformedToken(format!("the claim '{claim}' is missing or not of its type"))
            }
            ErrorKind::InvalidAlgorithm => AuthError::MalformedToken("the algorithm is not EdDSA".into()),
            _ => AuthError::MalformedToken(format!("claims: {e}")),
        })?
        .claims;
    if claims.sub.is_empty() {
        return Err(AuthError::MalformedToken("the claim 'sub' is empty".into()));
    }
    Ok(Principal {
        user_id: claims.sub,
        roles: claims.roles,
        scopes: claims.scope.split_whitespace().map(String::from).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header value")
    }

    #[test]
    fn reads_a_bearer_token_and_refuses_other_shapes() {
        assert_eq!(bearer(&value("Bearer aa.bb.cc")), Ok("aa.bb.cc"));
        assert_eq!(bearer(&value("bearer  a-_9.b.c ")), Ok("a-_9.b.c"));
        assert_eq!(
            bearer(&value("Basic dXNlcjpwYXNz")),
            Err(AuthError::MalformedHeader("is not a Bearer token"))
        );
        assert_eq!(
            bearer(&value("Bearer")),
            Err(AuthError::MalformedHeader("is not a Bearer token"))
        );
        assert_eq!(
            bearer(&value("Bearer   ")),
            Err(AuthError::MalformedHeader("has an empty Bearer token"))
        );
        assert!(matches!(bearer(&value("Bearer a.b")), Err(AuthError::MalformedToken(m)) if m.contains("has 2")));
        assert!(matches!(
            bearer(&value("Bearer a..c")),
            Err(AuthError::MalformedToken(_))
        ));
        assert!(matches!(
            bearer(&value("Bearer a.b+/.c")),
            Err(AuthError::MalformedToken(_))
        ));
        let long = format!("Bearer {}.b.c", "a".repeat(MAX_TOKEN_BYTES));
        assert_eq!(bearer(&value(&long)), Err(AuthError::TooLarge));
        let opaque = HeaderValue::from_bytes(b"Bearer \xff.b.c").expect("obs-text is allowed");
        assert_eq!(bearer(&opaque), Err(AuthError::MalformedHeader("is not ASCII text")));
    }

    #[test]
    fn the_header_must_be_eddsa_with_a_kid() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let token = |header: &str| format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header));
        assert_eq!(key_id(&token(r#"{"alg":"EdDSA","kid":"k1"}"#)), Ok("k1".into()));
        assert!(
            matches!(key_id(&token(r#"{"alg":"EdDSA"}"#)), Err(AuthError::MalformedToken(m)) if m.contains("no kid"))
        );
        assert!(
            matches!(key_id(&token(r#"{"alg":"HS256","kid":"k1"}"#)), Err(AuthError::MalformedToken(m)) if m.contains("HS256"))
        );
        assert!(matches!(key_id(&token("not json")), Err(AuthError::MalformedToken(_))));
        assert_eq!(printable_kid("k1"), Some("k1".into()));
        assert_eq!(printable_kid("a\"b"), None);
        assert_eq!(printable_kid(&"k".repeat(65)), None);
    }
}
