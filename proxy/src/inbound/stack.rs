//! The inbound stack, composed in one place, top to bottom in the order a
//! call goes through it: the server span and metrics (on top, so refused
//! calls are seen too), authorize, forward to the app. Built once per
//! accepted connection, because the caller's identity belongs to the
//! connection.

use tower::ServiceBuilder;

use super::{
    app::{ToApp, to_app},
    authorize::{AuthorizeLayer, Caller, Policy},
};
use crate::{
    body::ProxyBody,
    options::Settings,
    param::Param,
    telemetry::{ObserveLayer, Observed, Telemetry},
};

/// What is shared by every connection's stack.
#[derive(Clone)]
pub struct InboundStack {
    policy: Policy,
    app: ToApp,
    telemetry: Telemetry,
}

/// The target one connection's stack is built for.
struct Connection {
    caller: Caller,
    policy: Policy,
    telemetry: Telemetry,
}

impl Param<Caller> for Connection {
    fn param(&self) -> Caller {
        self.caller.clone()
    }
}

impl Param<Policy> for Connection {
    fn param(&self) -> Policy {
        self.policy.clone()
    }
}

impl Param<Telemetry> for Connection {
    fn param(&self) -> Telemetry {
        self.telemetry.clone()
    }
}

impl InboundStack {
    /// The inbound layers' metric families are registered by `telemetry`.
    pub fn new(
        service_name: &str,
        service: &meshwork_config::Service,
        settings: &Settings,
        telemetry: &Telemetry,
    ) -> Self {
        InboundStack {
            policy: Policy::new(service.clone()),
            app: to_app(service_name, service.app, settings),
            telemetry: telemetry.clone(),
        }
    }

    /// The allow rules, shared by every connection's stack.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub fn for_connection(
        &self,
        caller: Caller,
    ) -> impl tower::Service<
        http::Request<crate::body::RecvBody>,
        Response = http::Response<Observed<ProxyBody>>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static {
        let observe = ObserveLayer::inbound(&self.telemetry, caller.name(), caller.spiffe_id().clone());
        let target = Connection {
            caller,
            policy: self.policy.clone(),
            telemetry: self.telemetry.clone(),
        };
        ServiceBuilder::new()
            .layer(observe)
            .layer(AuthorizeLayer::new(&target))
            .service(self.app.clone())
    }
}
