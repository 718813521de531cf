//! Authorization: may this caller call this method? Health checks and
//! reflection are open to every mesh identity (probes and tooling need
//! them); everything else follows the service's `allow` rules. A refused
//! call is answered `PERMISSION_DENIED` naming the caller and the method,
//! logged and counted (`meshwork_authz_denied_total`), and never reaches
//! the app.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
};

use crate::body::RecvBody;
use arc_swap::ArcSwap;
use futures::future::Either;
use http::{Request, Response};
use meshwork_config::Service as ServiceConfig;
use tower::{Layer, Service};

use crate::{
    body::ProxyBody,
    grpc::{Code, GrpcPath, status},
    param::Param,
    telemetry::Telemetry,
};

/// The verified workload of the connection's peer: its name and the SPIFFE
/// ID its certificate carries.
#[derive(Debug, Clone)]
pub struct Caller {
    name: Arc<str>,
    spiffe_id: Arc<str>,
}

impl Caller {
    pub fn new(name: &str, spiffe_id: &str) -> Self {
        Caller {
            name: name.into(),
            spiffe_id: spiffe_id.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shared, not copied: the telemetry layer puts it on every span.
    pub fn spiffe_id(&self) -> &Arc<str> {
        &self.spiffe_id
    }
}

/// Who may call the service behind this sidecar. Follows mesh.toml: every
/// connection's stack shares it, so an edited `allow` holds for the next
/// call on connections already open. Read without a lock.
#[derive(Debug, Clone)]
pub struct Policy(Arc<ArcSwap<ServiceConfig>>);

/// The outcome for one call.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The message to answer with.
    Deny(String),
    NotGrpc,
}

impl Policy {
    pub fn new(service: ServiceConfig) -> Self {
        Policy(Arc::new(ArcSwap::from_pointee(service)))
    }

    /// Applies an edited mesh.toml's rules to every connection.
    pub fn update(&self, service: ServiceConfig) {
        self.0.store(Arc::new(service));
    }

    pub fn decide(&self, caller: &str, path: &str) -> Decision {
        let Some(GrpcPath { service, method }) = GrpcPath::parse(path) else {
            return Decision::NotGrpc;
        };
        if always_open(service) || self.0.load().permits(caller, service, method) {
            Decision::Allow
        } else {
            Decision::Deny(format!("{caller} may not call {service}/{method}"))
        }
    }
}

/// Services any mesh identity may call: health and reflection.
fn always_open(service: &str) -> bool {
    service == "grpc.health.v1.Health" || service.starts_with("grpc.reflection.")
}

/// Built once per connection; its services share it, so the per-call clone
/// the server makes of the stack costs one reference count here.
#[derive(Clone)]
pub struct AuthorizeLayer {
    shared: Arc<Shared>,
}

struct Shared {
    caller: Caller,
    policy: Policy,
    telemetry: Telemetry,
}

impl AuthorizeLayer {
    pub fn new<T: Param<Caller> + Param<Policy> + Param<Telemetry>>(target: &T) -> Self {
        AuthorizeLayer {
            shared: Arc::new(Shared {
                caller: target.param(),
                policy: target.param(),
                telemetry: target.param(),
            }),
        }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    shared: Arc<Shared>,
}

type Answer = Ready<Result<Response<ProxyBody>, Infallible>>;

impl<S> Service<Request<RecvBody>> for Authorize<S>
where
    S: Service<Request<RecvBody>, Response = Response<ProxyBody>, Error = Infallible>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Either<S::Future, Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<RecvBody>) -> Self::Future {
        let Shared {
            caller,
            policy,
            telemetry,
        } = &*self.shared;
        match policy.decide(caller.name(), req.uri().path()) {
            Decision::Allow => Either::Left(self.inner.call(req)),
            Decision::Deny(message) => {
                tracing::warn!(caller = %caller.name(), path = %req.uri().path(), "denied call");
                telemetry.authz_denied(caller.name(), req.uri().path());
                Either::Right(ready(Ok(status::response(Code::PermissionDenied, &message))))
            }
            Decision::NotGrpc => Either::Right(ready(Ok(status::response(
                Code::Unimplemented,
                &format!("'{}' is not a gRPC method path", req.uri().path()),
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_allow: &str) -> Policy {
        let text = format!(
            r#"
            trust_domain = "t.local"
            [services.payments]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:2"
            outbound = "127.0.0.1:3"
            admin = "127.0.0.1:4"
            grpc_services = ["shop.payments.v1.PaymentService"]
            {toml_allow}
            [services.cart]
            app = "127.0.0.1:11"
            inbound = "127.0.0.1:12"
            outbound = "127.0.0.1:13"
            admin = "127.0.0.1:14"
            grpc_services = ["shop.cart.v1.CartService"]
            [clients.demo]
            outbound = "127.0.0.1:20"
            admin = "127.0.0.1:21"
            "#
        );
        let config = meshwork_config::MeshConfig::parse(&text, std::path::Path::new("mesh.toml")).expect("config");
        Policy::new(config.services["payments"].clone())
    }

    const CHARGE: &str = "/shop.payments.v1.PaymentService/Charge";
    const REFUND: &str = "/shop.payments.v1.PaymentService/Refund";

    #[test]
    fn follows_allow_rules() {
        let p = policy(r#"allow = [{ from = "cart", methods = ["Charge"] }, { from = "demo", methods = ["Refund"] }]"#);
        assert_eq!(p.decide("cart", CHARGE), Decision::Allow);
        assert_eq!(p.decide("demo", REFUND), Decision::Allow);
        assert_eq!(
            p.decide("demo", CHARGE),
            Decision::Deny("demo may not call shop.payments.v1.PaymentService/Charge".into())
        );
        assert!(matches!(p.decide("cart", REFUND), Decision::Deny(_)));
    }

    #[test]
    fn health_and_reflection_are_open() {
        let p = policy("allow = []");
        assert!(matches!(p.decide("demo", CHARGE), Decision::Deny(_)));
        assert_eq!(p.decide("demo", "/grpc.health.v1.Health/Check"), Decision::Allow);
        assert_eq!(
            p.decide("demo", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Decision::Allow
        );
        assert_eq!(
            p.decide("demo", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Decision::Allow
        );
    }

    #[test]
    fn no_rules_means_any_mesh_identity() {
        let p = policy("");
        assert_eq!(p.decide("anyone", CHARGE), Decision::Allow);
    }

    #[test]
    fn an_update_holds_for_the_next_call() {
        let p = policy(r#"allow = [{ from = "cart", methods = ["Charge"] }]"#);
        let shared_by_a_connection = p.clone();
        assert!(matches!(
            shared_by_a_connection.decide("demo", CHARGE),
            Decision::Deny(_)
        ));
        let opened = policy(r#"allow = [{ from = "demo", methods = ["Charge"] }]"#);
        p.update(opened.0.load().as_ref().clone());
        assert_eq!(shared_by_a_connection.decide("demo", CHARGE), Decision::Allow);
        assert!(matches!(
            shared_by_a_connection.decide("cart", CHARGE),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn non_grpc_paths_are_refused() {
        let p = policy("");
        assert_eq!(p.decide("cart", "/"), Decision::NotGrpc);
        assert_eq!(p.decide("cart", "/index.html"), Decision::NotGrpc);
    }
}
