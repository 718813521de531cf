//! The Meshwork gateway as `mesh up` runs it: the launcher starts the
//! gateway, its sidecar, the shop's sidecar (in front of the bench's
//! backend, an app it waits for) and, for shared limits, a redis-server.
//! Every process is measured on its own.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use super::{Measured, backend::PRODUCT_ID};
use crate::{
    procstat::{self, Scope},
    scenario::{ProxyChild, free_ports, http_get, pki::TRUST_DOMAIN, spawn_launcher},
};

/// How long `mesh up` may take until the gateway answers.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The traffic policy of one run of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No cache rule, no rate limit: transcoding and the hop alone.
    Plain,
    /// `GetProduct` cached for 30 s.
    Cache,
    /// Cached, and a global limit (kept in memory) that no call reaches.
    CacheMemoryLimit,
    /// Cached, and the same limit kept in a local Redis.
    CacheRedisLimit,
}

/// A running gateway mesh; dropping it stops `mesh up` and its children.
pub struct GatewayMesh {
    /// The gateway's public port (plaintext, HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// The gateway sidecar's outbound port (what grpc-gateway calls too).
    pub sidecar_outbound: SocketAddr,
    pub measured: Vec<Measured>,
    _launcher: ProxyChild,
    _dir: tempfile::TempDir,
}

impl GatewayMesh {
    pub async fn start(mesh: &Path, backend: SocketAddr, policy: Policy) -> Result<GatewayMesh> {
        let dir = tempfile::Builder::new()
            .prefix("meshwork-bench-edge-")
            .tempdir()
            .context("creating a temp dir")?;
        let ports: [SocketAddr; 9] = free_ports()?;
        let [
            listen,
            admin,
            sidecar_outbound,
            sidecar_admin,
            _,
            _,
            shop_admin,
            _,
            dashboard,
        ] = ports;
        let config = dir.path().join("mesh.toml");
        let text = config_text(dir.path(), backend, &ports, policy);
        std::fs::write(&config, text).context("writing mesh.toml")?;
        let mut launcher = spawn_launcher(mesh, &config, dashboard, &dir.path().join("mesh-up.log"))?;
        wait_ready(&mut launcher, &[admin, sidecar_admin, shop_admin], listen).await?;
        let pid = launcher.pid();
        let measure = |role: &'static str, found: Result<Option<u32>>| -> Result<Measured> {
            let pid = found?.with_context(|| format!("no {role} process under `mesh up` (pid {pid})"))?;
            Ok(Measured {
                role,
                pid,
                scope: Scope::Tree,
            })
        };
        let find = |role, args: &[&str]| measure(role, procstat::find_descendant(pid, args));
        let mut measured = vec![
            find("gateway", &["gateway", "--config"])?,
            find("gateway sidecar", &["--name", "gateway"])?,
            find("shop sidecar", &["--name", "shop"])?,
        ];
        if policy == Policy::CacheRedisLimit {
            measured.push(measure("redis", procstat::find_descendant_named(pid, "redis-server"))?);
        }
        Ok(GatewayMesh {
            listen,
            sidecar_outbound,
            measured,
            _launcher: launcher,
            _dir: dir,
        })
    }
}

/// The shop (both contracts on the backend, callable by the gateway only)
/// and the gateway with `policy`; every method it calls is public.
fn config_text(state: &Path, backend: SocketAddr, ports: &[SocketAddr; 9], policy: Policy) -> String {
    let [
        listen,
        admin,
        sidecar_outbound,
        sidecar_admin,
        inbound,
        outbound,
        shop_admin,
        redis,
        _,
    ] = ports;
    let cache = r#"
[[gateway.cache]]
methods = ["shop.catalog.v1.CatalogService/GetProduct"]
ttl = "30s"
"#;
    let limit = r#"
[[gateway.rate_limits]]
name = "everyone"
methods = ["shop.catalog.v1.CatalogService/GetProduct"]
key = "global"
rate = "1000000/s"
burst = 1000000
"#;
    let policy_text = match policy {
        Policy::Plain => String::new(),
        Policy::Cache => cache.to_string(),
        Policy::CacheMemoryLimit => format!("{cache}{limit}"),
        Policy::CacheRedisLimit => format!(
            "{cache}{limit}\n[gateway.rate_limit_store]\nredis = \"local\"\nlocal_port = {}\non_error = \"closed\"\n",
            redis.port()
        ),
    };
    format!(
        r#"# Written by meshwork-bench for one run of the edge benchmark.
trust_domain = "{TRUST_DOMAIN}"
state_dir = '{state}'
leaf_lifetime = "24h"

[services.shop]
app = "{backend}"
inbound = "{inbound}"
outbound = "{outbound}"
admin = "{shop_admin}"
grpc_services = ["shop.catalog.v1.CatalogService", "shop.users.v1.UserService"]
allow = [{{ from = "gateway" }}]

[gateway]
listen = "{listen}"
admin = "{admin}"
sidecar = {{ outbound = "{sidecar_outbound}", admin = "{sidecar_admin}" }}

[gateway.auth]
public = ["shop.catalog.v1.CatalogService/GetProduct", "shop.users.v1.UserService/Register"]
{policy_text}"#,
        state = state.display(),
    )
}

/// Until every admin port is ready and a REST call through the gateway is
/// answered 200; fails early, with the launcher's output, if it exits.
async fn wait_ready(launcher: &mut ProxyChild, admins: &[SocketAddr], listen: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let path = format!("/v1/products/{PRODUCT_ID}");
    loop {
        launcher.check_running()?;
        let mut waiting_for = None;
        for &admin in admins {
            if !matches!(http_get(admin, "/ready").await, Ok((200, _))) {
                waiting_for = Some(format!("{admin}/ready"));
            }
        }
        if waiting_for.is_none() {
            match http_get(listen, &path).await {
                Ok((200, _)) => return Ok(()),
                answer => waiting_for = Some(format!("GET {path} on {listen}: {answer:?}")),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the gateway mesh is not ready after {START_TIMEOUT:?}; waiting for {}\n{}",
                waiting_for.unwrap_or_default(),
                launcher.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
