//! The sidecar's telemetry: a span per call on each side, the metrics
//! `/metrics` serves, and the optional JSON access log. [`Telemetry`] is made
//! once per sidecar and shared by both stacks; the [`ObserveLayer`] it hands
//! out sits at the top of each.

mod access_log;
mod layer;
mod metrics;
mod names;
mod span;

use std::sync::Arc;

use meshwork_contracts::Mesh;
use opentelemetry_sdk::trace::SdkTracer;
use prometheus_client::{metrics::gauge::Gauge, registry::Registry};

pub use layer::{Observe, ObserveLayer, Observed};
pub use metrics::Direction;

use access_log::AccessLog;
use metrics::{AuthzMetrics, CallMetrics, ConnectionMetrics, DropMetrics};
use names::Names;

/// `MESHWORK_ACCESS_LOG=1` (or `true`) turns the access log on without
/// editing mesh.toml.
const ACCESS_LOG_ENV: &str = "MESHWORK_ACCESS_LOG";

#[derive(Clone)]
pub struct Telemetry(Arc<Shared>);

struct Shared {
    /// This sidecar's workload, as spans name it.
    workload: &'static str,
    names: Names,
    tracer: SdkTracer,
    calls: CallMetrics,
    connections: ConnectionMetrics,
    authz: AuthzMetrics,
    access_log: Option<AccessLog>,
}

impl Telemetry {
    /// Registers the sidecar's families in `registry` and, when the access
    /// log is on (`[telemetry] access_log` or `MESHWORK_ACCESS_LOG`), starts
    /// its writer (so this must run inside the tokio runtime).
    pub fn new(workload: &str, mesh: &Mesh, registry: &mut Registry) -> Self {
        let config = &*mesh.config;
        let drops = DropMetrics::register(registry);
        let access_log = (config.telemetry.access_log || access_log_from_env())
            .then(|| AccessLog::start(drops.access_log.clone()))
            .flatten();
        Telemetry(Arc::new(Shared {
            workload: names::intern(workload),
            names: Names::new(mesh),
            tracer: meshwork_telemetry::tracer(),
            calls: CallMetrics::register(registry),
            connections: ConnectionMetrics::register(registry),
            authz: AuthzMetrics::register(registry),
            access_log,
        }))
    }

    /// The gauge of open connections on `direction`'s listener.
    pub fn open_connections(&self, direction: Direction) -> Gauge {
        self.0.connections.open(direction)
    }

    /// Counts a failed mTLS handshake; `reason` is one of a few fixed words.
    pub fn tls_failure(&self, direction: Direction, reason: &'static str) {
        self.0.connections.tls_failure(direction, reason);
    }

    /// Follows a new snapshot of the contracts (method names).
    pub fn update(&self, mesh: &Mesh) {
        self.0.names.update(mesh);
    }

    /// Counts a call the policy refused.
    pub fn authz_denied(&self, caller: &str, path: &str) {
        let names = &self.0.names;
        self.0.authz.denied(names.workload(caller), names.method(path).full);
    }
}

fn access_log_from_env() -> bool {
    std::env::var(ACCESS_LOG_ENV).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
}
