//! The inbound stack, composed in one place, top to bottom in the order a
//! call goes through it. Built once per accepted connection, because the
//! caller's identity belongs to the connection.

use std::net::SocketAddr;

use tower::ServiceBuilder;

use super::{
    app::ToApp,
    authorize::{AuthorizeLayer, Caller, Policy},
};
use crate::{options::Settings, param::Param};

/// What is shared by every connection's stack.
#[derive(Clone)]
pub struct InboundStack {
    policy: Policy,
    app: ToApp,
}

/// The target one connection's stack is built for.
struct Connection {
    caller: Caller,
    policy: Policy,
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

impl InboundStack {
    pub fn new(service_name: &str, service: &meshwork_config::Service, settings: &Settings) -> Self {
        let app: SocketAddr = service.app;
        InboundStack {
            policy: Policy::new(service.clone()),
            app: ToApp::new(service_name, app, settings),
        }
    }

    pub fn for_connection(
        &self,
        caller: Caller,
    ) -> impl tower::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<crate::body::ProxyBody>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static {
        let target = Connection {
            caller,
            policy: self.policy.clone(),
        };
        ServiceBuilder::new()
            // (issue 3: server span)
            .layer(AuthorizeLayer::new(&target))
            // (issue 3: metrics)
            .service(self.app.clone())
    }
}
