//! A destination's traffic policy, resolved per method once (at start and on
//! each configuration reload) so that a call finds everything with one map
//! lookup by its path, without building strings: whether it may be retried,
//! its deadline cap, its faults, what may be buffered. Published through an
//! `ArcSwap`, so readers never lock and a reload never blocks a call.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use meshwork_config::{Fault, GrpcCode, MeshConfig, RetryPolicy, Service};

use meshwork_contracts::{MethodContract, Registry};

use crate::map::FastMap;

/// What applies to calls of one method.
#[derive(Debug, Clone, Default)]
pub struct MethodRule {
    /// Sending it twice is harmless (contract or mesh.toml override).
    pub idempotent: bool,
    /// The request is one message, so reading it ahead (up to the replay
    /// cap) cannot deadlock a caller that waits for a response first.
    pub single_request: bool,
    /// The response is one message, so it may be held until its trailers
    /// to read the `grpc-status` there. Server-streaming responses never are.
    pub single_response: bool,
    /// Deadline cap: the method's `timeout`, else the service's.
    pub timeout: Option<Duration>,
    pub faults: Box<[Fault]>,
}

#[derive(Debug)]
pub struct DestinationPolicy {
    pub name: Arc<str>,
    methods: FastMap<Box<str>, MethodRule>,
    /// For paths that no contract names (health, reflection, …): never
    /// retried but when provably unprocessed, the service's timeout and its
    /// faults that name no method.
    other: MethodRule,
    /// Bit `n` set: an idempotent call is retried on status `n`.
    retry_on: u32,
    pub retry: RetryPolicy,
    /// Whether any method has a deadline cap or a fault: when not, the
    /// deadline and fault layers need no lookup for a call.
    any_timeout: bool,
    any_faults: bool,
}

/// The methods of `grpc_service` that `service`'s policy names.
fn named_methods<'a>(service: &'a Service, grpc_service: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let patterns = service
        .methods
        .keys()
        .chain(service.faults.iter().flat_map(|f| f.methods.iter()));
    let mut names: Vec<&str> = patterns
        .filter_map(move |pattern| match pattern.split_once('/') {
            Some((g, method)) if g == grpc_service => Some(method),
            Some(_) => None,
            None => Some(pattern.as_str()),
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter()
}

/// The live policy of one destination, swapped whole on reload.
pub type PolicyHandle = Arc<ArcSwap<DestinationPolicy>>;

impl DestinationPolicy {
    pub fn new(name: &str, service: &Service, config: &MeshConfig, registry: &Registry) -> Self {
        // One method's rule from what its contract says (`None`: no
        // contract, so never idempotent by default and never buffered) and
        // what mesh.toml says of it.
        let rule = |grpc_service: &str, method: &str, contract: Option<&MethodContract>| {
            let policy = service.method_policy(grpc_service, method);
            MethodRule {
                idempotent: policy
                    .and_then(|p| p.idempotent)
                    .unwrap_or(contract.is_some_and(|c| c.idempotency.retryable())),
                single_request: contract.is_some_and(|c| !c.client_streaming),
                single_response: contract.is_some_and(|c| !c.server_streaming),
                timeout: policy.and_then(|p| p.timeout).or(service.timeout),
                faults: service.faults_for(grpc_service, method).cloned().collect(),
            }
        };
        let mut methods = FastMap::default();
        for grpc_service in &service.grpc_services {
            if registry.knows(grpc_service) {
                for (method, path, contract) in registry.methods_of(grpc_service) {
                    methods.insert(path.into(), rule(grpc_service, method, Some(contract)));
                }
            } else {
                // No contract: the methods mesh.toml names (in `methods` or
                // in `faults`, bare or qualified) get their rules.
                for method in named_methods(service, grpc_service) {
                    let path = format!("/{grpc_service}/{method}").into_boxed_str();
                    methods.insert(path, rule(grpc_service, method, None));
                }
            }
        }
        let other = MethodRule {
            timeout: service.timeout,
            faults: service
                .faults
                .iter()
                .filter(|f| f.methods.is_empty())
                .cloned()
                .collect(),
            ..MethodRule::default()
        };
        let mut retry_on = 1 << GrpcCode::Unavailable.as_i32();
        for code in &service.retry_on {
            retry_on |= 1 << code.as_i32();
        }
        let rules = || methods.values().chain([&other]);
        let any_timeout = rules().any(|r| r.timeout.is_some());
        let any_faults = rules().any(|r| !r.faults.is_empty());
        DestinationPolicy {
            name: name.into(),
            any_timeout,
            any_faults,
            methods,
            other,
            retry_on,
            retry: config.retry.clone(),
        }
    }

    /// The rule for a call to `path` (`/pkg.Service/Method`).
    pub fn method(&self, path: &str) -> &MethodRule {
        self.methods.get(path).unwrap_or(&self.other)
    }

    /// The deadline cap of a call to `path`, if any.
    pub fn timeout(&self, path: &str) -> Option<Duration> {
        if !self.any_timeout {
            return None;
        }
        self.method(path).timeout
    }

    /// The faults to draw for a call to `path`; empty if none.
    pub fn faults(&self, path: &str) -> &[Fault] {
        if !self.any_faults {
            return &[];
        }
        &self.method(path).faults
    }

    /// Whether an idempotent call that ended with `code` is retried.
    pub fn retries_on(&self, code: u32) -> bool {
        code < 32 && self.retry_on & (1 << code) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(config: &MeshConfig) -> Registry {
        meshwork_contracts::Mesh::new(std::sync::Arc::new(config.clone()))
            .expect("contracts")
            .registry
            .as_ref()
            .clone()
    }

    fn policy(extra: &str) -> DestinationPolicy {
        let text = format!(
            r#"
            trust_domain = "t.local"
            [services.catalog]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:2"
            outbound = "127.0.0.1:3"
            admin = "127.0.0.1:4"
            grpc_services = ["shop.catalog.v1.CatalogService", "meshwork.echo.v1.EchoService"]
            timeout = "2s"
            retry_on = ["RESOURCE_EXHAUSTED"]
            {extra}
            "#
        );
        let config = MeshConfig::parse(&text, std::path::Path::new("mesh.toml")).expect("config");
        DestinationPolicy::new("catalog", &config.services["catalog"], &config, &registry(&config))
    }

    #[test]
    fn contracts_and_overrides() {
        let p = policy(
            r#"
            [services.catalog.methods.Unary]
            idempotent = true
            timeout = "300ms"
            [services.catalog.methods."shop.catalog.v1.CatalogService/GetProduct"]
            idempotent = false
            "#,
        );
        let echo = p.method("/meshwork.echo.v1.EchoService/Unary");
        assert!(echo.idempotent && echo.single_request && echo.single_response);
        assert_eq!(echo.timeout, Some(Duration::from_millis(300)));
        assert!(!p.method("/shop.catalog.v1.CatalogService/GetProduct").idempotent);
        let list = p.method("/shop.catalog.v1.CatalogService/ListProducts");
        assert!(list.idempotent);
        assert_eq!(list.timeout, Some(Duration::from_secs(2)));
        let watch = p.method("/shop.catalog.v1.CatalogService/WatchProducts");
        assert!(watch.idempotent && watch.single_request && !watch.single_response);
        let bidi = p.method("/meshwork.echo.v1.EchoService/BidiStream");
        assert!(!bidi.idempotent && !bidi.single_request);
        let health = p.method("/grpc.health.v1.Health/Check");
        assert!(!health.idempotent && !health.single_request);
        assert_eq!(health.timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn shortcuts_agree_with_the_rules() {
        let p = policy("");
        assert_eq!(p.timeout("/grpc.health.v1.Health/Check"), Some(Duration::from_secs(2)));
        assert!(p.faults("/meshwork.echo.v1.EchoService/Unary").is_empty());
        let text = r#"
            trust_domain = "t.local"
            [services.catalog]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:2"
            outbound = "127.0.0.1:3"
            admin = "127.0.0.1:4"
            grpc_services = ["meshwork.echo.v1.EchoService"]
            "#;
        let config = MeshConfig::parse(text, std::path::Path::new("mesh.toml")).expect("config");
        let bare = DestinationPolicy::new("catalog", &config.services["catalog"], &config, &registry(&config));
        assert_eq!(bare.timeout("/meshwork.echo.v1.EchoService/Unary"), None);
        assert!(bare.faults("/meshwork.echo.v1.EchoService/Unary").is_empty());
        let faulty = policy(
            r#"
            [[services.catalog.faults]]
            methods = ["Unary"]
            abort = { percent = 100.0, status = "UNAVAILABLE" }
            "#,
        );
        assert_eq!(faulty.faults("/meshwork.echo.v1.EchoService/Unary").len(), 1);
        assert!(faulty.faults("/meshwork.echo.v1.EchoService/ServerStream").is_empty());
    }

    #[test]
    fn retried_statuses() {
        let p = policy("");
        assert!(p.retries_on(14));
        assert!(p.retries_on(8));
        assert!(!p.retries_on(13));
        assert!(!p.retries_on(0));
        assert!(!p.retries_on(99));
    }

    #[test]
    fn faults_by_method() {
        let p = policy(
            r#"
            [[services.catalog.faults]]
            methods = ["Unary"]
            abort = { percent = 100.0, status = "UNAVAILABLE" }
            [[services.catalog.faults]]
            delay = { percent = 50.0, duration = "10ms" }
            "#,
        );
        assert_eq!(p.method("/meshwork.echo.v1.EchoService/Unary").faults.len(), 2);
        assert_eq!(p.method("/meshwork.echo.v1.EchoService/ServerStream").faults.len(), 1);
        assert_eq!(p.method("/grpc.health.v1.Health/Check").faults.len(), 1);
    }

    /// A service no contract describes: the methods mesh.toml names, bare
    /// or qualified, in `methods` or in `faults`, get their rules.
    #[test]
    fn methods_named_for_a_service_without_contracts() {
        let text = r#"
            trust_domain = "t.local"
            [services.reviews]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:2"
            outbound = "127.0.0.1:3"
            admin = "127.0.0.1:4"
            grpc_services = ["reviews.v1.ReviewService"]
            [services.reviews.methods.GetReview]
            idempotent = true
            timeout = "100ms"
            [[services.reviews.faults]]
            methods = ["reviews.v1.ReviewService/AddReview"]
            abort = { percent = 100.0, status = "UNAVAILABLE" }
            [[services.reviews.faults]]
            methods = ["ListReviews"]
            delay = { percent = 100.0, duration = "1ms" }
            "#;
        let config = MeshConfig::parse(text, std::path::Path::new("mesh.toml")).expect("config");
        let p = DestinationPolicy::new("reviews", &config.services["reviews"], &config, &registry(&config));
        let get = p.method("/reviews.v1.ReviewService/GetReview");
        assert!(get.idempotent && !get.single_request);
        assert_eq!(get.timeout, Some(Duration::from_millis(100)));
        assert_eq!(p.faults("/reviews.v1.ReviewService/AddReview").len(), 1);
        assert_eq!(p.faults("/reviews.v1.ReviewService/ListReviews").len(), 1);
        assert!(p.faults("/reviews.v1.ReviewService/Other").is_empty());
        assert!(!p.method("/reviews.v1.ReviewService/AddReview").idempotent);
    }
}
