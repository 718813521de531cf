//! The MCP server proper, as rmcp's [`ServerHandler`]: `tools/list` shows a
//! caller the tools its token allows, `tools/call` calls the method through
//! the mesh (see [`call`](super::call)). Everything else of the protocol
//! (initialize or server/discover, versions, sessions, SSE) is rmcp's.
//!
//! A handler holds only the tool table: who calls, with which token, and
//! the gateway's state come with each request, in the HTTP request's
//! extensions (a [`Caller`] put there by the HTTP layer, which rmcp hands
//! on in the request context), because one legacy session serves many
//! HTTP requests and a token may change between them.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CacheScope, CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult, PaginatedRequestParams,
        ServerCapabilities, ServerConfig, Tool as ToolDef,
    },
    service::RequestContext,
};

use super::{call, tools::Tools};
use crate::{auth::Principal, catalog::Access, edge::Shared};

/// Who makes one MCP request, verified by the HTTP layer.
#[derive(Clone)]
pub struct Caller {
    pub shared: Arc<Shared>,
    pub principal: Option<Principal>,
    pub trace: opentelemetry::Context,
    /// The call's deadline: the gateway's, or a shorter `grpc-timeout`.
    pub deadline: Duration,
    /// Who counts for rate limits keyed by client or API key: the agent's
    /// address and its HTTP request's headers (none over stdio).
    pub client: std::net::IpAddr,
    pub headers: http::HeaderMap,
}

#[derive(Clone)]
pub struct Handler {
    pub tools: Arc<ArcSwap<Tools>>,
    pub config: Arc<meshwork_config::Mcp>,
    /// Over stdio there is no HTTP request: the one caller of the process.
    pub stdio: Option<Caller>,
}

/// Whether `principal` may call a method of `access` (the same rule as
/// `caller::authorize`, without a request).
pub fn allows(access: &Access, principal: Option<&Principal>) -> bool {
    match (access, principal) {
        (Access::Public, _) => true,
        (_, None) => false,
        (Access::SignedIn, Some(_)) => true,
        (Access::Role(role), Some(p)) => p.roles.iter().any(|r| r == role),
    }
}

impl Handler {
    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .or(self.stdio.as_ref())
            .cloned()
            .ok_or_else(|| McpError::internal_error("the request reached MCP without its caller", None))
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("meshwork-gateway", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "The mesh's methods as tools. Browsing needs no token; anything about a user needs \
                 a bearer token (log in with user_login, or sign in by OAuth). Fields named user_id \
                 take \"me\" for the signed-in user.",
            )
    }

    fn get_tool(&self, name: &str) -> Option<ToolDef> {
        self.tools.load().get(name).map(|t| t.def.clone())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = self.caller(&context)?;
        let tools = self.tools.load();
        let visible = tools
            .iter()
            .filter(|t| allows(&t.method.access, caller.principal.as_ref()))
            .map(|t| t.def.clone())
            .collect();
        // The list depends on the caller's token: no shared caching.
        Ok(ListToolsResult::with_all_items(visible).with_cache_scope(CacheScope::Private))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(&context)?;
        let Some(tool) = self.tools.load().get(&request.name).cloned() else {
            // The specification's protocol error for an unknown tool.
            return Err(McpError::invalid_params(
                format!("Unknown tool: {}", request.name),
                None,
            ));
        };
        Ok(call::call(&tool, request.arguments, &caller, &self.config, &context)
            .await
            .into())
    }
}
