//! Who is calling: the users service's access tokens (EdDSA JWT), verified
//! at the edge against the keys the users service publishes (JWKS, by `kid`).
//!
//! The rest of the gateway sees only [`Authenticator::authenticate`], which
//! turns a request's headers into the verified [`Principal`], or says why not.

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

/// Why a request's credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the authorization header is not a bearer token")]
    Malformed,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

impl AuthError {
    /// A short label for the `gateway_auth_failures_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed",
            AuthError::Invalid(_) => "invalid",
        }
    }
}

/// Stand-in until the verifier lands: refuses every token.
pub struct Authenticator;

impl Authenticator {
    pub fn new(_auth: &meshwork_config::Auth, _users: tonic::transport::Channel) -> Self {
        Authenticator
    }

    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Option<Principal>, AuthError> {
        match headers.get(http::header::AUTHORIZATION) {
            None => Ok(None),
            Some(_) => Err(AuthError::Malformed),
        }
    }
}

impl AuthError {
    pub fn www_authenticate(&self) -> String {
        format!("Bearer realm=\"meshwork\", error=\"invalid_token\", error_description=\"{self}\"")
    }

    pub fn is_unavailable(&self) -> bool {
        false
    }
}
