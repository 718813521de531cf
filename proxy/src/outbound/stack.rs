//! The outbound stack, composed in one place, top to bottom in the order a
//! call goes through it:
//!
//! observe (trace context, client span) → route by gRPC service → per
//! destination: deadline → retry (budget, backoff) → fault injection →
//! balance (P2C over peak-EWMA) → per endpoint: failure accrual → forward
//! over the endpoint's shared mTLS HTTP/2 connection.
//!
//! Discovery keeps each destination's endpoint set and policy up to date
//! from the watched mesh.toml (`discover.rs`).

use std::sync::Arc;

use meshwork_contracts::Mesh;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tower::ServiceBuilder;

use super::{
    accrual::{self, Accrual, AccrualLayer, AccrualState},
    balance::{Balance, Endpoint, EndpointSet},
    connect::MtlsConnector,
    deadline::{DeadlineLayer, Deadlines},
    destination::{Destination, ExpectedIdentity},
    discover::{self, Followed},
    fault::{FaultLayer, Faults},
    forward::{Forward, forward},
    metrics::OutboundMetrics,
    retry::{Retry, RetryLayer},
    route::Route,
    warm,
};
use crate::{
    identity::{Identity, IdentityError, client_config},
    options::Settings,
    param::Param,
    telemetry::{Observe, ObserveLayer, Telemetry},
};

/// One endpoint's stack: failure accrual over its own connection.
type EndpointStack = Accrual<Forward>;

/// One destination's stack, below the route.
pub type DestinationStack = Deadlines<Retry<Faults<Balance<EndpointStack>>>>;

/// The whole outbound stack as served on the outbound listener.
pub type Outbound = Observe<Route<DestinationStack>>;

/// `registry` is the sidecar's metrics registry: layers register their
/// families in it as the stack is built. `updates` publishes each new valid
/// snapshot of mesh.toml and its contracts; a task spawned here applies it
/// to every destination.
pub fn build(
    mesh: &Mesh,
    updates: watch::Receiver<Arc<Mesh>>,
    identity: &Identity,
    settings: &Settings,
    registry: &mut Registry,
    telemetry: &Telemetry,
) -> Result<Outbound, IdentityError> {
    let (config, contracts) = (&*mesh.config, &*mesh.registry);
    let metrics = OutboundMetrics::register(registry);
    let mut followed = Vec::new();
    let route = Route::new(config, &Destination::all(config), |destination| {
        // Fails early on a TLS set-up problem, rather than per endpoint.
        let ExpectedIdentity(expected) = destination.param();
        client_config(identity, &expected, &destination.name)?;
        let name = destination.name.clone();
        // Destinations are the configuration's services, so this holds.
        let policy = discover::policy_handle(&name, config, contracts)
            .ok_or_else(|| IdentityError::Config(format!("no service named {name}")))?;
        let refresh = Arc::new(tokio::sync::Notify::new());
        let make = endpoint_maker(destination, identity, settings, &metrics, telemetry, &refresh);
        let set = Arc::new(EndpointSet::new(name.clone()));
        let follow = Followed::new(name.clone(), policy.clone(), set.clone(), make, refresh);
        follow.update(config, contracts);
        followed.push(follow);
        Ok(ServiceBuilder::new()
            .layer(DeadlineLayer::new(policy.clone()))
            .layer(RetryLayer::new(policy.clone(), metrics.retry_counters(&name)))
            .layer(FaultLayer::new(policy))
            .service(Balance::new(set)))
    })?;
    tokio::spawn(discover::follow(updates, followed));
    Ok(ServiceBuilder::new()
        // Trace context and the client span: above the route, so a call
        // with no route is seen too, and retries are inside one span.
        .layer(ObserveLayer::outbound(telemetry))
        .service(route))
}

/// Builds the stack of one endpoint (replica `addr` of `destination`): its
/// own TLS client checking the destination's SPIFFE ID (every replica of a
/// service has the same), and its failure accrual, which tells `refresh`
/// of failures (discovery by DNS asks again).
fn endpoint_maker(
    destination: &Destination,
    identity: &Identity,
    settings: &Settings,
    metrics: &OutboundMetrics,
    telemetry: &Telemetry,
    refresh: &Arc<tokio::sync::Notify>,
) -> discover::MakeEndpoint<EndpointStack> {
    let (destination, identity, settings, metrics, telemetry, refresh) = (
        destination.clone(),
        identity.clone(),
        settings.clone(),
        metrics.clone(),
        telemetry.clone(),
        refresh.clone(),
    );
    Arc::new(move |addr| {
        let replica = Destination {
            addr,
            ..destination.clone()
        };
        let ExpectedIdentity(expected) = replica.param();
        let who = format!("{} at {addr}", replica.name);
        let tls = match client_config(&identity, &expected, &who) {
            Ok(tls) => tls,
            Err(error) => {
                tracing::error!(endpoint = %who, %error, "cannot call this endpoint");
                return None;
            }
        };
        let connector = MtlsConnector::new(
            &replica,
            tls,
            settings.connect_timeout,
            settings.handshake_timeout,
            telemetry.clone(),
        );
        let state = Arc::new(
            AccrualState::new(
                replica.name.clone(),
                addr,
                accrual::DEFAULT_THRESHOLD,
                metrics.ejections(&replica.name, addr),
            )
            .signal_failures_to(refresh.clone()),
        );
        let stack = ServiceBuilder::new()
            .layer(AccrualLayer::new(state.clone()))
            .service(forward(&replica, connector, &settings));
        warm::warm_up(stack.clone());
        Some(Endpoint::new(addr, stack, state))
    })
}
