//! MCP (Model Context Protocol) at the gateway: every published method of
//! the mesh as a tool for agents, at `/mcp` over Streamable HTTP, generated
//! from the contracts (`tools`, `schema`), no code per service.
//!
//! The protocol itself is rmcp's `StreamableHttpService` (the official Rust
//! SDK): the 2026-07-28 protocol (stateless, `server/discover`, no session)
//! and the ones before it (2025-11-25: `initialize`, `Mcp-Session-Id`), the
//! `MCP-Protocol-Version`, `Accept`, `Content-Type`, `Mcp-Method`/`Mcp-Name`
//! checks against the body, `Origin` validation (403), and the errors the
//! specification names for unsupported versions and methods.
//!
//! What this module adds in front of it, because rmcp leaves authorization
//! to the server: the endpoint is an OAuth 2.1 protected resource. Its
//! metadata (RFC 9728) is at `/.well-known/oauth-protected-resource` (and
//! the same with `/mcp` after it, the RFC's form for a resource with a
//! path); a bad or expired token is 401 with `WWW-Authenticate: Bearer
//! resource_metadata="…"`, and so is a `tools/call` without a token for a
//! tool that needs one; a token without the tool's role is 403
//! `insufficient_scope`. That needs the tool's name before rmcp reads the
//! body, so the body is read (within the gateway's body limit) and peeked
//! at here, then handed on. The client's token stops here: calls enter the
//! mesh with the verified user (`upstream::into_mesh`).

mod call;
mod comments;
mod handler;
pub mod schema;
pub mod stdio;
pub mod tools;

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use meshwork_config::Gateway;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use serde_json::json;
use tonic::body::Body;

use crate::{
    auth::{AuthError, Principal},
    catalog::Access,
    edge::Shared,
};
use handler::{Caller, Handler};
use tools::Tools;

/// The MCP endpoint's path.
pub const PATH: &str = "/mcp";
/// RFC 9728's well-known path; the resource's path may follow it.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// Whether a request is for the MCP endpoint or its metadata.
pub fn serves(path: &str) -> bool {
    path == PATH || path == METADATA_PATH || path.strip_prefix(METADATA_PATH) == Some(PATH)
}

/// The scopes an OAuth token for the resource may carry: a tool whose method
/// has no side effects needs `shop:read`, any other `shop:write`. A token
/// without a scope claim (from `POST /v1/login`) may call every tool.
pub const SCOPES: [&str; 2] = ["shop:read", "shop:write"];

/// The resource's canonical URI: `[gateway.mcp] resource`, or
/// `http(s)://<listen>/mcp`.
pub fn resource_of(gateway: &Gateway) -> String {
    let scheme = if gateway.tls.is_some() { "https" } else { "http" };
    gateway
        .mcp
        .resource
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{}{PATH}", gateway.listen))
}

/// The MCP endpoint: rmcp's service, the tool table, and the metadata.
pub struct Endpoint {
    service: StreamableHttpService<Handler, LocalSessionManager>,
    tools: Arc<ArcSwap<Tools>>,
    config: Arc<meshwork_config::Mcp>,
    /// The resource's canonical URI.
    resource: String,
    /// Where its metadata is, for `WWW-Authenticate`.
    metadata_url: String,
    stream_note: String,
    /// `Origin` values allowed (`[gateway.mcp] origins`, or CORS's).
    origins: Vec<String>,
}

impl Endpoint {
    pub fn new(gateway: &Gateway) -> Self {
        let config = Arc::new(gateway.mcp.clone());
        let resource = resource_of(gateway);
        let metadata_url = match resource.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
                let path = if path.is_empty() {
                    String::new()
                } else {
                    format!("/{path}")
                };
                format!("{scheme}://{authority}{METADATA_PATH}{path}")
            }
            None => format!("{resource}{METADATA_PATH}"),
        };
        let tools = Arc::new(ArcSwap::from_pointee(Tools::default()));
        let handler = Handler {
            tools: tools.clone(),
            config: config.clone(),
            stdio: None,
        };
        let origins = config.origins.clone().unwrap_or_else(|| gateway.cors.origins.clone());
        let allowed = origins.clone();
        let mut transport = StreamableHttpServerConfig::default()
            .with_sse_keep_alive(Some(std::time::Duration::from_secs(15)))
            .with_max_request_body_bytes(gateway.limits.max_body_bytes)
            // The gateway is a public server: any Host may name it. DNS
            // rebinding is what Origin validation below is for.
            .disable_allowed_hosts();
        transport = if origins.iter().any(|o| o == "*") {
            transport.disable_allowed_origins()
        } else {
            transport.with_allowed_origins(origins).enforce_origin_validation()
        };
        let service = StreamableHttpService::new(
            move || Ok(handler.clone()),
            Arc::new(LocalSessionManager::default()),
            transport,
        );
        let stream_note = format!(
            "Streams: a progress notification per message (when the call carries a progress token); \
             the result collects the messages, at most {} or what arrives within {}.",
            config.stream_messages,
            humantime::format_duration(config.stream_window)
        );
        Endpoint {
            service,
            tools,
            config,
            resource,
            metadata_url,
            stream_note,
            origins: allowed,
        }
    }

    /// The tool table of the catalog in force, rebuilt when it changed.
    fn refresh(&self, shared: &Shared) {
        let catalog = shared.catalog.load_full();
        if self.tools.load().source != Arc::as_ptr(&catalog) as usize {
            self.tools
                .store(Arc::new(Tools::build(&catalog, &self.config, &self.stream_note)));
        }
    }

    /// The resource's canonical URI: what tokens for it carry as `aud`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Whether a browser page of `origin` may call the endpoint: listed in
    /// `origins` (compared as ASCII, case-insensitively), or `"*"` is.
    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    /// The configured authorization servers, or this gateway's own.
    fn authorization_servers(&self) -> Vec<String> {
        if self.config.authorization_servers.is_empty() {
            vec![crate::oauth::issuer_of(&self.resource)]
        } else {
            self.config.authorization_servers.clone()
        }
    }

    /// RFC 9728 metadata.
    fn metadata(&self) -> Response<Body> {
        let body = json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers(),
            "bearer_methods_supported": ["header"],
            "scopes_supported": SCOPES,
            "resource_name": "Meshwork gateway (MCP)",
        });
        let mut response = Response::new(Body::new(Full::new(Bytes::from(body.to_string()))));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }

    /// A 401 or 403 whose challenge points at the metadata.
    fn challenge(&self, status: StatusCode, error: Option<(&str, String)>) -> Response<Body> {
        let mut value = format!(
            "Bearer realm=\"{}\", resource_metadata=\"{}\"",
            crate::auth::REALM,
            self.metadata_url
        );
        if let Some((code, description)) = &error {
            let description: String = description
                .chars()
                .map(|c| match c {
                    ' '..='~' if c != '"' && c != '\\' => c,
                    _ => '\'',
                })
                .collect();
            value.push_str(&format!(", error=\"{code}\", error_description=\"{description}\""));
        }
        let message = error
            .map(|(_, d)| d)
            .unwrap_or_else(|| "this call needs a bearer token".into());
        // A JSON-RPC error without an id, as the transport allows for HTTP errors.
        let body = json!({"jsonrpc": "2.0", "error": {"code": -32001, "message": message}});
        let mut response = Response::new(Body::new(Full::new(Bytes::from(body.to_string()))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }

    fn unauthorized(&self, error: &AuthError) -> Response<Body> {
        if error.is_unavailable() {
            return plain(StatusCode::SERVICE_UNAVAILABLE, &error.to_string());
        }
        let code = match error {
            AuthError::Missing => return self.challenge(StatusCode::UNAUTHORIZED, None),
            AuthError::MalformedHeader(_) => "invalid_request",
            _ => "invalid_token",
        };
        self.challenge(StatusCode::UNAUTHORIZED, Some((code, error.to_string())))
    }
}

/// Serves `/mcp` and the protected resource metadata.
pub async fn serve(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    trace: opentelemetry::Context,
    client: std::net::IpAddr,
) -> Response<Body> {
    let Some(endpoint) = shared.mcp.as_ref() else {
        return plain(
            StatusCode::NOT_FOUND,
            "MCP is not enabled at this gateway ([gateway.mcp] enabled)",
        );
    };
    if request.uri().path() != PATH {
        return match *request.method() {
            Method::GET | Method::HEAD => endpoint.metadata(),
            _ => plain(StatusCode::METHOD_NOT_ALLOWED, "the metadata is read with GET"),
        };
    }
    endpoint.refresh(&shared);
    // The body first (bounded): a refusal that leaves it unread would cost
    // the client its keep-alive connection.
    let (mut parts, body) = request.into_parts();
    let body = if parts.method == Method::POST {
        match Limited::new(body, shared.limits.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the body is larger than the gateway's limit",
                );
            }
            Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("the body could not be read: {e}")),
        }
    } else {
        Bytes::new()
    };
    // Origin before authorization (the transport's DNS-rebinding rule): rmcp
    // checks it too, but only after the authorization here has answered.
    if let Some(origin) = parts.headers.get(header::ORIGIN)
        && !endpoint.origin_allowed(origin)
    {
        let body =
            json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Forbidden: Origin header is not allowed"}});
        let mut response = plain(StatusCode::FORBIDDEN, &body.to_string());
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    let principal = match shared.auth.authenticate_for_resource(&parts.headers).await {
        Ok(principal) => principal,
        Err(error) => {
            shared.metrics.auth_failure(error.reason());
            return endpoint.unauthorized(&error);
        }
    };
    if let Some(refused) = check_tool_call(endpoint, &body, principal.as_ref()) {
        shared
            .metrics
            .auth_failure(if principal.is_some() { "forbidden" } else { "missing" });
        return refused;
    }
    let deadline = crate::upstream::deadline(&parts.headers, shared.limits.request_timeout);
    // A 2025-11-25 session is the agent's session: services see its id as baggage.
    let trace = match parts.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) {
        Some(session) => crate::upstream::with_session(&trace, session),
        None => trace,
    };
    // The token has done its work: it goes no further, not even to rmcp.
    parts.headers.remove(header::AUTHORIZATION);
    parts.extensions.insert(Caller {
        shared: shared.clone(),
        principal,
        trace,
        deadline,
        client,
        headers: parts.headers.clone(),
    });
    let response = endpoint
        .service
        .handle(Request::from_parts(parts, Full::new(body)))
        .await;
    response.map(Body::new)
}

/// 401 or 403 for a `tools/call` of a tool the caller may not call; `None`
/// for everything else (rmcp answers what is malformed).
fn check_tool_call(endpoint: &Endpoint, body: &Bytes, principal: Option<&Principal>) -> Option<Response<Body>> {
    #[derive(serde::Deserialize)]
    struct Peek {
        method: Option<String>,
        params: Option<Params>,
    }
    #[derive(serde::Deserialize)]
    struct Params {
        name: Option<String>,
    }
    let peek: Peek = serde_json::from_slice(body).ok()?;
    if peek.method.as_deref() != Some("tools/call") {
        return None;
    }
    let name = peek.params?.name?;
    let tools = endpoint.tools.load();
    let tool = tools.get(&name)?;
    match (&tool.method.access, principal) {
        (Access::Public, _) => None,
        (_, None) => Some(endpoint.challenge(StatusCode::UNAUTHORIZED, None)),
        (Access::Role(role), Some(p)) if !p.roles.iter().any(|r| r == role) => Some(endpoint.challenge(
            StatusCode::FORBIDDEN,
            Some((
                "insufficient_scope",
                format!("{name} needs the role '{role}', which user {} does not have", p.user_id),
            )),
        )),
        (_, Some(p)) => {
            let needed = if tool.method.idempotency == meshwork_contracts::Idempotency::NoSideEffects {
                SCOPES[0]
            } else {
                SCOPES[1]
            };
            if p.scopes.is_empty() || p.scopes.iter().any(|s| s == needed) {
                return None;
            }
            let mut refused = endpoint.challenge(
                StatusCode::FORBIDDEN,
                Some((
                    "insufficient_scope",
                    format!("{name} needs the scope '{needed}', which the token was not granted"),
                )),
            );
            // RFC 6750 §3: the scope that would do, for the client to ask for (step-up).
            if let Some(value) = refused
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                && let Ok(value) = HeaderValue::from_str(&format!("{value}, scope=\"{needed}\""))
            {
                refused.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
            Some(refused)
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from(text.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
