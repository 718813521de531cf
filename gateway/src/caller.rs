//! Who may make this call: the published method's access rule against the
//! request's verified principal. The answer is a principal (or none, for a
//! public method called without a token) or a [`Refusal`] that each front
//! end turns into its protocol's error.

use http::HeaderMap;
use tonic::Status;

use crate::{
    auth::{AuthError, Authenticator, Principal},
    catalog::{Access, Published},
};

/// Why a call is refused before it reaches the mesh.
#[derive(Debug)]
pub enum Refusal {
    /// 401 with `WWW-Authenticate`: no token where one is needed, or a bad one.
    Unauthenticated {
        challenge: String,
        message: String,
        reason: &'static str,
    },
    /// 403: a valid token without the role.
    Forbidden(String),
    /// 503: the keys to check the token cannot be had right now.
    Unavailable(String),
}

/// The `WWW-Authenticate` challenge for a request without a token.
const CHALLENGE: &str = "Bearer realm=\"meshwork\"";

impl Refusal {
    pub fn status(&self) -> Status {
        match self {
            Refusal::Unauthenticated { message, .. } => Status::unauthenticated(message.clone()),
            Refusal::Forbidden(message) => Status::permission_denied(message.clone()),
            Refusal::Unavailable(message) => Status::unavailable(message.clone()),
        }
    }

    /// The `WWW-Authenticate` value to send, for a 401.
    pub fn challenge(&self) -> Option<&str> {
        match self {
            Refusal::Unauthenticated { challenge, .. } => Some(challenge),
            _ => None,
        }
    }

    /// The `gateway_auth_failures_total{reason}` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated { reason, .. } => reason,
            Refusal::Forbidden(_) => "forbidden",
            Refusal::Unavailable(_) => "keys_unavailable",
        }
    }
}

/// The principal of a call to `method`, or why it may not be made. A token
/// sent to a public method is still checked: a bad one is refused, not
/// ignored, so a client learns its token is wrong.
pub async fn authorize(
    auth: &Authenticator,
    method: &Published,
    headers: &HeaderMap,
) -> Result<Option<Principal>, Refusal> {
    let principal = auth.authenticate(headers).await.map_err(refusal)?;
    match (&method.access, principal) {
        (Access::Public, principal) => Ok(principal),
        (_, None) => Err(Refusal::Unauthenticated {
            challenge: CHALLENGE.to_string(),
            message: format!("{} needs a bearer token (log in at POST /v1/login)", method.label),
            reason: "missing",
        }),
        (Access::SignedIn, Some(principal)) => Ok(Some(principal)),
        (Access::Role(role), Some(principal)) if principal.roles.iter().any(|r| r == role) => Ok(Some(principal)),
        (Access::Role(role), Some(principal)) => Err(Refusal::Forbidden(format!(
            "{} needs the role '{role}', which user {} does not have",
            method.label, principal.user_id
        ))),
    }
}

fn refusal(error: AuthError) -> Refusal {
    if error.is_unavailable() {
        return Refusal::Unavailable(error.to_string());
    }
    Refusal::Unauthenticated {
        challenge: error.www_authenticate(),
        message: error.to_string(),
        reason: error.reason(),
    }
}
