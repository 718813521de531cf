//! Readiness: the sidecar is ready when its certificates are loaded (true
//! from the start: it does not start without them) and, for a service, the
//! app answers `grpc.health.v1.Health/Check` with SERVING. The app is probed
//! in the background every ~1 s and the result cached, so `/ready` answers
//! instantly and probes of `/ready` never pile onto the app.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::shutdown::Shutdown;

#[derive(Clone)]
pub struct Readiness(Arc<ArcSwap<Result<(), String>>>);

impl Readiness {
    pub fn new(initial: Result<(), String>) -> Self {
        Readiness(Arc::new(ArcSwap::from_pointee(initial)))
    }

    /// `Ok` when ready, else why not.
    pub fn state(&self) -> Result<(), String> {
        (**self.0.load()).clone()
    }

    pub fn set(&self, state: Result<(), String>) {
        self.0.store(Arc::new(state));
    }
}

/// Probes the app's health every `interval` until shutdown.
pub async fn probe(readiness: Readiness, service: String, app: SocketAddr, interval: Duration, mut shutdown: Shutdown) {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{app}")) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            readiness.set(Err(format!("cannot probe {service} app at {app}: {error}")));
            return;
        }
    };
    // A probe must never take longer than the interval between probes.
    let channel = endpoint.connect_timeout(interval).timeout(interval).connect_lazy();
    let mut client = HealthClient::new(channel);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => return,
        }
        let state = match client.check(HealthCheckRequest { service: String::new() }).await {
            Ok(rsp) if rsp.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
            Ok(rsp) => Err(format!(
                "{service} app at {app} reports {:?}",
                ServingStatus::try_from(rsp.get_ref().status).unwrap_or(ServingStatus::Unknown)
            )),
            Err(status) => Err(format!(
                "{service} app at {app} does not answer health checks: {}",
                status.message()
            )),
        };
        if let (Ok(()), Err(reason)) = (readiness.state(), &state) {
            tracing::warn!(%reason, "not ready");
        }
        readiness.set(state);
    }
}
