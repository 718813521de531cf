//! `mesh mcp --stdio`: the gateway's tools over standard input and output,
//! for desktop agents that launch local MCP servers. Calls go through the
//! sidecar of a workload of mesh.toml (`--via`, a client such as `demo`),
//! so they carry that workload's mesh identity and its allow rules decide
//! (a call it may not make is a tool result with PERMISSION_DENIED). The
//! tool list is the gateway's (`[gateway]` and `[gateway.mcp]`).
//!
//! Who the user is: a token in `MESH_MCP_TOKEN` (from `POST /v1/login`),
//! verified as the gateway verifies it; without one, only public tools are
//! listed. Nothing may be written to standard output but the protocol.

use std::{path::Path, sync::Arc};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use meshwork_contracts::Mesh;
use rmcp::ServiceExt;

use super::{
    handler::{Caller, Handler},
    tools::Tools,
};
use crate::{GatewayError, access_log::AccessLog, catalog::Catalog, edge::Shared, metrics::Metrics, upstream};

/// The environment variable with the user's bearer token.
pub const TOKEN_ENV: &str = "MESH_MCP_TOKEN";

/// Serves MCP on stdin/stdout until the client closes it.
pub async fn serve(config: &Path, via: &str) -> Result<(), GatewayError> {
    let mesh = Mesh::load(config)?;
    let file = mesh.config.source.clone();
    let gateway = mesh
        .config
        .gateway
        .clone()
        .ok_or_else(|| GatewayError::NoGateway { file: file.clone() })?;
    let outbound = mesh
        .config
        .sidecars()
        .find(|s| s.name == via)
        .map(|s| s.outbound)
        .ok_or_else(|| GatewayError::Stdio(format!("{}: no workload named '{via}' to call through", file.display())))?;
    super::tools::check_keys(&mesh, &gateway.mcp).map_err(|reason| GatewayError::Mcp {
        file: file.clone(),
        reason,
    })?;
    let catalog = Arc::new(Catalog::build(&mesh).map_err(|source| GatewayError::Catalog {
        file: file.clone(),
        source,
    })?);
    let channel = upstream::channel(outbound);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let auth = crate::auth::Authenticator::new(&gateway.auth, channel.clone());
    let principal = match std::env::var(TOKEN_ENV) {
        Ok(token) if !token.trim().is_empty() => {
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| GatewayError::Stdio(format!("{TOKEN_ENV} is not a token")))?;
            headers.insert(AUTHORIZATION, value);
            auth.authenticate(&headers)
                .await
                .map_err(|e| GatewayError::Stdio(format!("{TOKEN_ENV}: {e}")))?
        }
        _ => None,
    };
    // The same rate limits and cache as the gateway's (counters of this
    // process, or the gateway's Redis when the file shares them).
    let rate_limits = crate::limit::RateLimits::build(&gateway, crate::limit::LimitMetrics::register(&mut registry))
        .map(Arc::new)
        .map_err(|source| GatewayError::Policy {
            file: file.clone(),
            reason: source.to_string(),
        })?;
    rate_limits.start_housekeeping();
    let cache = crate::cache::ResponseCache::build(&gateway, crate::cache::CacheMetrics::register(&mut registry));
    let config = Arc::new(gateway.mcp.clone());
    let tools = Tools::build(&catalog, &config, "Streams: the result collects the messages.");
    let shared = Arc::new(Shared {
        catalog: ArcSwap::new(catalog),
        auth,
        preferences: upstream::Preferences::new(channel.clone(), upstream::PREFERENCES_TTL),
        channel,
        limits: gateway.limits.clone(),
        log: AccessLog::start(crate::access_log::Sink::Stderr, metrics.log_lines_dropped.clone()),
        metrics,
        mcp: None,
        rate_limits,
        cache,
    });
    let handler = Handler {
        tools: Arc::new(ArcSwap::from_pointee(tools)),
        config,
        stdio: Some(Caller {
            shared: shared.clone(),
            principal,
            trace: opentelemetry::Context::new(),
            deadline: gateway.limits.request_timeout,
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            headers: HeaderMap::new(),
        }),
    };
    let running = handler
        .serve(rmcp::transport::io::stdio())
        .await
        .map_err(|e| GatewayError::Stdio(format!("the MCP session did not start: {e}")))?;
    let _ = running.waiting().await;
    Ok(())
}
