//! Entry points for the fuzz targets in `fuzz/` and for the test that replays
//! their corpora on the stable toolchain (`tests/fuzz_corpus.rs`): what the
//! gateway reads from a client, fed arbitrary bytes, with the properties a
//! parse must keep checked here, once for both. Not an API.

use std::sync::LazyLock;

use http::HeaderValue;
use jsonwebtoken::{DecodingKey, Validation};

use crate::auth::{MAX_TOKEN_BYTES, Principal, token};

/// The public half of RFC 8037's example Ed25519 key (appendix A): the seed
/// corpus holds tokens signed by it, so the fuzzer starts past the signature.
pub const FUZZ_KEY_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

static KEY: LazyLock<Option<DecodingKey>> = LazyLock::new(|| DecodingKey::from_ed_components(FUZZ_KEY_X).ok());
static VALIDATION: LazyLock<Validation> = LazyLock::new(|| token::validation("meshwork-users", "meshwork", 30));
/// The same rules without the signature, so that mutated claims (whose
/// signature cannot match) still reach the claim checks.
static CLAIMS_ONLY: LazyLock<Validation> = LazyLock::new(|| {
    let mut v = token::validation("meshwork-users", "meshwork", 30);
    v.insecure_disable_signature_validation();
    v
});

/// An `Authorization` header value as the gateway reads it: what passes as a
/// bearer token is at most [`MAX_TOKEN_BYTES`] of three base64url parts; its
/// header, signature and claims are then checked without a panic, and a token
/// that verifies names a user. Every refusal can be written as a challenge.
pub fn token(data: &[u8]) {
    let _ = verified(data);
}

/// [`token`], returning the principal when the token verifies against
/// [`FUZZ_KEY_X`] (for the replay test to show the corpus gets that far).
pub fn verified(data: &[u8]) -> Option<Principal> {
    let value = HeaderValue::from_bytes(data).ok()?;
    let token = match token::bearer(&value) {
        Ok(token) => token,
        Err(e) => {
            check_challenge(&e.www_authenticate());
            return None;
        }
    };
    assert!(token.len() <= MAX_TOKEN_BYTES, "a token over the bound passed");
    assert_eq!(token.split('.').count(), 3, "{token}");
    // As the authenticator does: no key lookup without a kid.
    match token::key_id(token) {
        Ok(kid) => assert!(!kid.is_empty()),
        Err(e) => {
            check_challenge(&e.www_authenticate());
            return None;
        }
    }
    let key = KEY.as_ref()?;
    if let Ok(p) = token::verify(token, key, &CLAIMS_ONLY) {
        assert!(!p.user_id.is_empty());
    }
    match token::verify(token, key, &VALIDATION) {
        Ok(p) => {
            assert!(!p.user_id.is_empty());
            Some(p)
        }
        Err(e) => {
            check_challenge(&e.www_authenticate());
            None
        }
    }
}

/// A challenge is always a valid header value (no quote or control
/// character from the client leaks into it).
fn check_challenge(challenge: &str) {
    assert!(HeaderValue::from_str(challenge).is_ok(), "{challenge:?}");
    let description = challenge.split("error_description=\"").nth(1).unwrap_or("\"");
    assert_eq!(description.matches('"').count(), 1, "{challenge:?}");
}
