//! Entry points for the fuzz targets in `fuzz/` and for the test that replays
//! their corpora on the stable toolchain (`tests/fuzz_corpus.rs`): what the
//! gateway reads from a client, fed arbitrary bytes, with the properties a
//! parse must keep checked here, once for both. Not an API.

use std::sync::LazyLock;

use http::HeaderValue;
use jsonwebtoken::{DecodingKey, Validation};
use prost_reflect::ReflectMessage;

use crate::auth::{MAX_TOKEN_BYTES, Principal, token};

/// The public half of RFC 8037's example Ed25519 key (appendix A): the seed
/// corpus holds tokens signed by it, so the fuzzer starts past the signature.
pub const FUZZ_KEY_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

static KEY: LazyLock<Option<DecodingKey>> = LazyLock::new(|| DecodingKey::from_ed_components(FUZZ_KEY_X).ok());
static VALIDATION: LazyLock<Validation> = LazyLock::new(|| token::validation("meshwork-users", &["meshwork"], 30));
/// The same rules without the signature, so that mutated claims (whose
/// signature cannot match) still reach the claim checks.
static CLAIMS_ONLY: LazyLock<Validation> = LazyLock::new(|| {
    let mut v = token::validation("meshwork-users", &["meshwork"], 30);
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

/// A path template from a contract and request paths, one per line after
/// it: a template either parses or is refused with a reason; matching never
/// panics, and a match binds every variable of the template.
pub fn path_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.lines();
    let Some(template) = lines.next() else { return };
    let Ok(template) = crate::rest::template::PathTemplate::parse(template) else {
        return;
    };
    let variables = template.variables().count();
    for path in lines {
        if let Some(values) = template.matches(path) {
            assert_eq!(values.len(), variables, "{template} against {path}");
        }
    }
}

/// The shop's REST routes from the repository's mesh.toml and the
/// compiled-in contracts: what a client's query and body are turned into.
static CATALOG: LazyLock<Option<crate::catalog::Catalog>> = LazyLock::new(|| {
    let config =
        meshwork_config::MeshConfig::parse(include_str!("../../mesh.toml"), std::path::Path::new("mesh.toml")).ok()?;
    let mesh = meshwork_contracts::Mesh::new(std::sync::Arc::new(config)).ok()?;
    crate::catalog::Catalog::build(&mesh).ok()
});

/// A REST request for one of the shop's routes: the first byte picks the
/// route, the next line is the query, the rest the body. It becomes a
/// request message or a reason naming what was wrong, never a panic; a
/// message that was built prints as JSON that reads back as the same message.
pub fn rest_request(data: &[u8]) {
    let Some(catalog) = CATALOG.as_ref() else { return };
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let routes = catalog.routes();
    let route = &routes[usize::from(pick) % routes.len()];
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(query) = std::str::from_utf8(query) else { return };
    let values: Vec<(&str, String)> = route
        .template
        .variables()
        .map(|v| (v.field_path.as_str(), "v".to_string()))
        .collect();
    let body = bytes::Bytes::copy_from_slice(body);
    match crate::rest::request::build(route, &values, Some(query), &body, Some("me-user")) {
        Ok(message) => {
            let json = serde_json::to_string(&message).expect("a built message prints as JSON");
            let mut deserializer = serde_json::Deserializer::from_str(&json);
            let again = prost_reflect::DynamicMessage::deserialize(message.descriptor(), &mut deserializer)
                .expect("its JSON reads back");
            // Compared as JSON: a field set to its default (`page_token=`)
            // is the same request as one left unset, as proto3 has it.
            let printed = serde_json::to_string(&again).expect("prints again");
            assert_eq!(printed, json);
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

/// How many routes [`rest_request`] picks from (the replay test checks the
/// target is not running against nothing).
pub fn rest_routes() -> usize {
    CATALOG.as_ref().map_or(0, |c| c.routes().len())
}
