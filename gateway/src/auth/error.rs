//! Why a request's credentials were refused, and how each reason reaches the
//! client: its HTTP status (401, 403, or 503 when the keys cannot be had), the
//! `WWW-Authenticate` challenge of RFC 6750, and a label for the metrics.

use http::StatusCode;

use super::token::MAX_TOKEN_BYTES;

/// The realm every challenge names.
pub const REALM: &str = "meshwork";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The call needs a token and the request has none (the gateway decides
    /// that; [`Authenticator::authenticate`](super::Authenticator::authenticate)
    /// answers `Ok(None)` for a request without one).
    #[error("this call needs a bearer token")]
    Missing,
    #[error("the authorization header {0}")]
    MalformedHeader(&'static str),
    #[error("the bearer token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("the token is malformed: {0}")]
    MalformedToken(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token was not issued by this mesh's users service (iss)")]
    WrongIssuer,
    #[error("the token is meant for another audience (aud)")]
    WrongAudience,
    /// The `kid` names no key the users service publishes, even after
    /// fetching its keys again. Holds the kid if it is short printable text.
    #[error("the token's key{} is not one the users service publishes", kid_suffix(.0))]
    UnknownKey(Option<String>),
    /// The users service could not be asked for its keys: not the caller's fault.
    #[error("the keys that verify tokens are unavailable: {0}")]
    KeysUnavailable(String),
    /// A valid token without the role the call needs.
    #[error("this call needs the role '{0}'")]
    Forbidden(String),
}

fn kid_suffix(kid: &Option<String>) -> String {
    kid.as_ref().map(|k| format!(" (kid '{k}')")).unwrap_or_default()
}

impl AuthError {
    /// A short label for the `gateway_auth_failures_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::MalformedHeader(_) => "malformed_header",
            AuthError::TooLarge => "too_large",
            AuthError::MalformedToken(_) => "malformed_token",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::KeysUnavailable(_) => "keys_unavailable",
            AuthError::Forbidden(_) => "forbidden",
        }
    }

    /// Whether the gateway, not the caller, is at fault: the users service
    /// could not be reached for its keys (503, not 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable(_))
    }

    /// The HTTP status of this refusal: 401, 403 for a missing role, 503 when
    /// the keys are unavailable.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The gRPC status code of this refusal, for gRPC and gRPC-Web callers.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            AuthError::KeysUnavailable(_) => tonic::Code::Unavailable,
            AuthError::Forbidden(_) => tonic::Code::PermissionDenied,
            _ => tonic::Code::Unauthenticated,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 section 3): a bare challenge
    /// when no token was sent or the fault is ours, otherwise one naming the
    /// error, with this error's message as its description.
    pub fn www_authenticate(&self) -> String {
        let error = match self {
            AuthError::Missing | AuthError::KeysUnavailable(_) => return format!("Bearer realm=\"{REALM}\""),
            AuthError::MalformedHeader(_) => "invalid_request",
            AuthError::Forbidden(_) => "insufficient_scope",
            _ => "invalid_token",
        };
        // error_description allows %x20-21 / %x23-5B / %x5D-7E: no quote, no backslash.
        let description: String = self
            .to_string()
            .chars()
            .map(|c| match c {
                ' '..='~' if c != '"' && c != '\\' => c,
                _ => '\'',
            })
            .collect();
        format!("Bearer realm=\"{REALM}\", error=\"{error}\", error_description=\"{description}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(AuthError::Missing.www_authenticate(), "Bearer realm=\"meshwork\"");
        assert_eq!(
            AuthError::Expired.www_authenticate(),
            "Bearer realm=\"meshwork\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
        assert_eq!(
            AuthError::MalformedHeader("is not a Bearer token").www_authenticate(),
            "Bearer realm=\"meshwork\", error=\"invalid_request\", error_description=\"the authorization header is not a Bearer token\""
        );
        assert_eq!(
            AuthError::Forbidden("admin".into()).www_authenticate(),
            "Bearer realm=\"meshwork\", error=\"insufficient_scope\", error_description=\"this call needs the role 'admin'\""
        );
        let odd = AuthError::MalformedToken("a \"quoted\\\" é".into()).www_authenticate();
        assert!(
            odd.ends_with("error_description=\"the token is malformed: a 'quoted'' '\""),
            "{odd}"
        );
    }

    #[test]
    fn unavailable_keys_are_503_not_401() {
        let e = AuthError::KeysUnavailable("users: connection refused".into());
        assert!(e.is_unavailable());
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.grpc_code(), tonic::Code::Unavailable);
        assert!(!AuthError::BadSignature.is_unavailable());
        assert_eq!(AuthError::BadSignature.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(AuthError::Forbidden("admin".into()).status(), StatusCode::FORBIDDEN);
        assert_eq!(AuthError::UnknownKey(Some("k1".into())).reason(), "unknown_key");
        assert_eq!(
            AuthError::UnknownKey(Some("k1".into())).to_string(),
            "the token's key (kid 'k1') is not one the users service publishes"
        );
        assert_eq!(
            AuthError::UnknownKey(None).to_string(),
            "the token's key is not one the users service publishes"
        );
    }
}
