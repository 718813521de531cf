//! The gateway as an OAuth 2.1 authorization server for agents, so an MCP
//! client can sign its user in by itself: RFC 8414 metadata, RFC 7591
//! dynamic registration of public clients, the authorization code grant with
//! PKCE (S256 only) behind a login page, and the token endpoint. Tokens are
//! the users service's, with `aud` set to the resource asked for (RFC 8707):
//! only the gateway's MCP resource is served, and `/mcp` accepts them.
//!
//! What must be shared by every gateway replica (clients, codes) lives in the
//! users service (`RegisterClient`, `GetClient`, `Authorize`,
//! `ExchangeCode`); this module speaks OAuth's HTTP (forms, redirects, JSON
//! errors) and calls those through the gateway's sidecar.
//!
//! Scopes: `shop:read` and `shop:write` (see [`crate::mcp::SCOPES`]), both
//! when the client asks for none.
//!
//! Left out: refresh tokens, consent beyond the login page, `iss` in the
//! authorization response (RFC 9207), client secrets (every client is public).

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use meshwork_proto::users::{
    AuthorizeRequest, ExchangeCodeRequest, GetClientRequest, RegisterClientRequest,
    user_service_client::UserServiceClient,
};
use serde_json::json;
use tonic::{Code, body::Body};

use crate::edge::Shared;

/// RFC 8414's well-known path.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
const REGISTER_PATH: &str = "/oauth/register";
const AUTHORIZE_PATH: &str = "/oauth/authorize";
const TOKEN_PATH: &str = "/oauth/token";
/// Forms and registrations are small; anything larger is not one.
const MAX_BODY: usize = 16 * 1024;
const LOGIN_PAGE: &str = include_str!("login.html");

/// Whether a request is for the authorization server.
pub fn serves(path: &str) -> bool {
    matches!(path, METADATA_PATH | REGISTER_PATH | AUTHORIZE_PATH | TOKEN_PATH)
}

/// The issuer: the origin of the MCP resource (`http://host:port`).
pub fn issuer_of(resource: &str) -> String {
    match resource.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest)),
        None => resource.to_owned(),
    }
}

pub async fn serve(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let Some(endpoint) = shared.mcp.as_ref() else {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "MCP, and its authorization server, are off here",
        );
    };
    let resource = endpoint.resource();
    let issuer = issuer_of(resource);
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return oauth_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the body is too large",
            );
        }
    };
    let users = UserServiceClient::new(shared.channel.clone());
    match (parts.method.clone(), parts.uri.path()) {
        (Method::GET | Method::HEAD, METADATA_PATH) => json_response(StatusCode::OK, &metadata(&issuer)),
        (Method::POST, REGISTER_PATH) => register(users, &body).await,
        (Method::GET, AUTHORIZE_PATH) => {
            let query = parts.uri.query().unwrap_or("");
            authorize_page(users, resource, &form(query.as_bytes()), None).await
        }
        (Method::POST, AUTHORIZE_PATH) => authorize(users, resource, &form(&body)).await,
        (Method::POST, TOKEN_PATH) => token(users, resource, &form(&body)).await,
        (method, path) => oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            &format!("{method} is not served at {path}"),
        ),
    }
}

fn metadata(issuer: &str) -> serde_json::Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}{AUTHORIZE_PATH}"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "registration_endpoint": format!("{issuer}{REGISTER_PATH}"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": crate::mcp::SCOPES,
    })
}

/// A form body or query string, by name (the last of a repeated name wins).
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

fn form(bytes: &[u8]) -> Form {
    Form(form_urlencoded::parse(bytes).into_owned().collect())
}

/// RFC 7591: a public client (no secret) for the authorization code grant.
async fn register(mut users: UserServiceClient<tonic::transport::Channel>, body: &Bytes) -> Response<Body> {
    #[derive(serde::Deserialize)]
    struct Registration {
        #[serde(default)]
        redirect_uris: Vec<String>,
        #[serde(default)]
        client_name: String,
    }
    let registration: Registration = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                &format!("the body is not client metadata: {e}"),
            );
        }
    };
    let request = RegisterClientRequest {
        client_name: registration.client_name,
        redirect_uris: registration.redirect_uris,
    };
    match users.register_client(request).await {
        Ok(client) => {
            let client = client.into_inner();
            let issued = client.created_at.map_or(0, |t| t.seconds);
            json_response(
                StatusCode::CREATED,
                &json!({
                    "client_id": client.client_id,
                    "client_id_issued_at": issued,
                    "client_name": client.client_name,
                    "redirect_uris": client.redirect_uris,
                    "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code"],
                    "response_types": ["code"],
                }),
            )
        }
        Err(status) if status.code() == Code::InvalidArgument => {
            let error = if status.message().starts_with("redirect_uris") {
                "invalid_redirect_uri"
            } else {
                "invalid_client_metadata"
            };
            oauth_error(StatusCode::BAD_REQUEST, error, status.message())
        }
        Err(status) => upstream_error(&status),
    }
}

/// The login page for an authorization request, after checking the client
/// and its redirect URI (an error about those is shown here, never sent to a
/// redirect URI that may not be the client's).
async fn authorize_page(
    mut users: UserServiceClient<tonic::transport::Channel>,
    resource: &str,
    params: &Form,
    error: Option<&str>,
) -> Response<Body> {
    if let Some(refused) = check_request(params, resource) {
        return page(StatusCode::BAD_REQUEST, &refused);
    }
    let client = match users
        .get_client(GetClientRequest {
            client_id: params.get("client_id").to_owned(),
        })
        .await
    {
        Ok(client) => client.into_inner(),
        Err(status) if status.code() == Code::NotFound => {
            return page(StatusCode::BAD_REQUEST, "The client_id names no registered client.");
        }
        Err(status) => return upstream_error(&status),
    };
    if !client.redirect_uris.iter().any(|u| u == params.get("redirect_uri")) {
        return page(
            StatusCode::BAD_REQUEST,
            "The redirect_uri is not one the client registered.",
        );
    }
    let hidden: String = [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "resource",
        "scope",
    ]
    .iter()
    .map(|name| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            escape(params.get(name))
        )
    })
    .collect();
    let name = if client.client_name.is_empty() {
        "An application"
    } else {
        &client.client_name
    };
    let html = LOGIN_PAGE
        .replace("{{client}}", &escape(name))
        .replace("{{resource}}", &escape(resource))
        .replace("{{error}}", &escape(error.unwrap_or("")))
        .replace("{{email}}", &escape(params.get("email")))
        .replace("{{hidden}}", &hidden);
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    html_response(status, html)
}

/// What is wrong with an authorization request's own parameters, if anything.
fn check_request(params: &Form, resource: &str) -> Option<String> {
    if params.get("response_type") != "code" {
        return Some(format!(
            "response_type must be 'code', got '{}'.",
            params.get("response_type")
        ));
    }
    if params.get("code_challenge_method") != "S256" || params.get("code_challenge").is_empty() {
        return Some("PKCE is required: code_challenge with code_challenge_method=S256.".into());
    }
    let asked = params.get("resource");
    if !asked.is_empty() && asked != resource {
        return Some(format!(
            "This server issues tokens for {resource} only, not for '{asked}'."
        ));
    }
    None
}

/// The login form posted: a code and a redirect to the client, or the page again.
async fn authorize(
    mut users: UserServiceClient<tonic::transport::Channel>,
    resource: &str,
    params: &Form,
) -> Response<Body> {
    if let Some(refused) = check_request(params, resource) {
        return page(StatusCode::BAD_REQUEST, &refused);
    }
    let request = AuthorizeRequest {
        email: params.get("email").to_owned(),
        password: params.get("password").to_owned(),
        client_id: params.get("client_id").to_owned(),
        redirect_uri: params.get("redirect_uri").to_owned(),
        code_challenge: params.get("code_challenge").to_owned(),
        code_challenge_method: params.get("code_challenge_method").to_owned(),
        resource: resource.to_owned(),
        scope: params.get("scope").to_owned(),
    };
    match users.authorize(request).await {
        Ok(answer) => {
            let code = answer.into_inner().code;
            let redirect = params.get("redirect_uri");
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("code", &code);
            if !params.get("state").is_empty() {
                query.append_pair("state", params.get("state"));
            }
            let separator = if redirect.contains('?') { '&' } else { '?' };
            let location = format!("{redirect}{separator}{}", query.finish());
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::FOUND;
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(status) if status.code() == Code::Unauthenticated => {
            authorize_page(users, resource, params, Some("Wrong email or password.")).await
        }
        Err(status) if matches!(status.code(), Code::InvalidArgument | Code::NotFound) => {
            page(StatusCode::BAD_REQUEST, status.message())
        }
        Err(status) => upstream_error(&status),
    }
}

/// RFC 6749 §4.1.3 with PKCE: the code for a token, as JSON.
async fn token(
    mut users: UserServiceClient<tonic::transport::Channel>,
    resource: &str,
    params: &Form,
) -> Response<Body> {
    if params.get("grant_type") != "authorization_code" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("only authorization_code is served, not '{}'", params.get("grant_type")),
        );
    }
    let asked = params.get("resource");
    if !asked.is_empty() && asked != resource {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            &format!("tokens are issued for {resource} only, not for '{asked}'"),
        );
    }
    for required in ["code", "code_verifier", "client_id", "redirect_uri"] {
        if params.get(required).is_empty() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("{required} is required"),
            );
        }
    }
    let request = ExchangeCodeRequest {
        code: params.get("code").to_owned(),
        code_verifier: params.get("code_verifier").to_owned(),
        client_id: params.get("client_id").to_owned(),
        redirect_uri: params.get("redirect_uri").to_owned(),
        resource: resource.to_owned(),
    };
    match users.exchange_code(request).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let expires_in = answer.expires_at.map_or(0, |t| (t.seconds - now).max(0));
            let mut response = json_response(
                StatusCode::OK,
                &json!({"access_token": answer.access_token, "token_type": "Bearer", "expires_in": expires_in}),
            );
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(status) if status.code() == Code::FailedPrecondition => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", status.message())
        }
        Err(status) if status.code() == Code::InvalidArgument => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_request", status.message())
        }
        Err(status) => upstream_error(&status),
    }
}

fn upstream_error(status: &tonic::Status) -> Response<Body> {
    tracing::warn!(%status, "gateway: the users service could not serve an OAuth step");
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        &format!("the users service could not be asked: {}", status.message()),
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    let mut response = json_response(status, &json!({"error": error, "error_description": description}));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn page(status: StatusCode, message: &str) -> Response<Body> {
    html_response(
        status,
        format!(
            "<!doctype html><title>Sign-in request refused</title><p>{}</p>",
            escape(message)
        ),
    )
}

fn html_response(status: StatusCode, html: String) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from(html))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The login page must not be framed (clickjacking).
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

/// HTML text and attribute escaping: five characters, no crate needed.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_is_the_resources_origin() {
        assert_eq!(issuer_of("http://127.0.0.1:8080/mcp"), "http://127.0.0.1:8080");
        assert_eq!(issuer_of("https://shop.example/mcp"), "https://shop.example");
    }

    #[test]
    fn escapes_what_html_would_read() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn requests_need_pkce_and_our_resource() {
        let ok = form(b"response_type=code&code_challenge=abc&code_challenge_method=S256");
        assert!(check_request(&ok, "http://h/mcp").is_none());
        let plain = form(b"response_type=code&code_challenge=abc&code_challenge_method=plain");
        assert!(check_request(&plain, "http://h/mcp").unwrap().contains("PKCE"));
        let other = form(b"response_type=code&code_challenge=abc&code_challenge_method=S256&resource=http://x/mcp");
        assert!(check_request(&other, "http://h/mcp").unwrap().contains("not for"));
        let token = form(b"response_type=token&code_challenge=abc&code_challenge_method=S256");
        assert!(check_request(&token, "http://h/mcp").unwrap().contains("response_type"));
    }
}
