//! What the gateway publishes, read from the contract registry: every
//! method of a mesh service whose allow rules let the gateway call it, with
//! who may call it from outside (public, any signed-in user, or a role) and,
//! where its contract has a `google.api.http` rule, its REST routes. Rebuilt
//! from each snapshot of the mesh; nothing here lists a method by hand.

use std::{collections::HashMap, sync::Arc};

use meshwork_config::{Auth, GATEWAY_WORKLOAD, MeshConfig, method_matches};
use meshwork_contracts::{Idempotency, Mesh, MethodContract};
use meshwork_proto::google::api::{HttpRule, http_rule::Pattern};
use prost_reflect::{FieldDescriptor, MethodDescriptor};

use crate::rest::template::{PathTemplate, TemplateError};

/// Who may call a method through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// Any user with a valid token.
    SignedIn,
    /// A user whose token holds this role.
    Role(String),
}

/// One method the gateway publishes.
#[derive(Debug)]
pub struct Published {
    /// `/pkg.Service/Method`: the gRPC request path.
    pub path: Box<str>,
    /// The same, ready for a request (cheap to clone).
    pub grpc_path: http::uri::PathAndQuery,
    /// `pkg.Service/Method`: the label in metrics and logs.
    pub label: Arc<str>,
    pub descriptor: MethodDescriptor,
    pub idempotency: Idempotency,
    pub server_streaming: bool,
    pub client_streaming: bool,
    pub access: Access,
}

/// Where a REST request's body goes.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body (GET, DELETE, or a rule without `body`).
    None,
    /// `body: "*"`: every field the path does not bind.
    Whole,
    /// `body: "field"`: that top-level field.
    Field(FieldDescriptor),
}

/// One REST binding of a method.
#[derive(Debug)]
pub struct Route {
    pub http_method: http::Method,
    pub template: PathTemplate,
    pub body: BodyRule,
    /// `response_body`: the response field sent instead of the whole message.
    pub response_body: Option<FieldDescriptor>,
    pub method: Arc<Published>,
}

/// Every published method and REST route of one snapshot of the mesh.
#[derive(Debug, Default)]
pub struct Catalog {
    by_path: HashMap<Box<str>, Arc<Published>>,
    /// Most specific first, so the first match is the one to take.
    routes: Vec<Route>,
}

/// A contract's HTTP rule that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{method}: {source}")]
    Template {
        method: String,
        #[source]
        source: TemplateError,
    },
    #[error("{method}: {reason}")]
    Rule { method: String, reason: String },
}

/// What a REST request's path and method found.
pub enum Lookup<'a> {
    Found(&'a Route, Vec<(&'a str, String)>),
    /// The path exists with other methods: 405 with `Allow`.
    WrongMethod(Vec<http::Method>),
    NotFound,
}

impl Catalog {
    pub fn build(mesh: &Mesh) -> Result<Self, CatalogError> {
        let config = &*mesh.config;
        let auth = config.gateway.as_ref().map(|g| g.auth.clone()).unwrap_or_default();
        let mut catalog = Catalog::default();
        for (path, contract) in mesh.registry.methods() {
            let Some(published) = publish(config, &auth, path, contract) else {
                continue;
            };
            let published = Arc::new(published);
            for rule in http_rules(&published.descriptor) {
                catalog.routes.push(route(&rule, &published)?);
            }
            catalog.by_path.insert(path.into(), published);
        }
        catalog
            .routes
            .sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
        Ok(catalog)
    }

    /// The published method at a gRPC request path.
    pub fn method(&self, path: &str) -> Option<&Arc<Published>> {
        self.by_path.get(path)
    }

    pub fn methods(&self) -> impl Iterator<Item = &Arc<Published>> {
        self.by_path.values()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for a REST request. HEAD is served as GET.
    pub fn find(&self, method: &http::Method, path: &str) -> Lookup<'_> {
        let wanted = if method == http::Method::HEAD {
            &http::Method::GET
        } else {
            method
        };
        let mut allowed = Vec::new();
        for route in &self.routes {
            let Some(values) = route.template.matches(path) else {
                continue;
            };
            if route.http_method == *wanted {
                return Lookup::Found(route, values);
            }
            if !allowed.contains(&route.http_method) {
                allowed.push(route.http_method.clone());
            }
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::WrongMethod(allowed)
        }
    }
}

/// The method as the gateway publishes it, when the mesh lets the gateway call it.
fn publish(config: &MeshConfig, auth: &Auth, path: &str, contract: &MethodContract) -> Option<Published> {
    let descriptor = contract.descriptor.clone();
    let grpc_service = descriptor.parent_service().full_name().to_string();
    let (_, service) = config.service_serving(&grpc_service)?;
    if !service.permits(GATEWAY_WORKLOAD, &grpc_service, descriptor.name()) {
        return None;
    }
    let names = |key: &String| key == &grpc_service || method_matches(key, &grpc_service, descriptor.name());
    let access = if let Some((_, role)) = auth.roles.iter().find(|(key, _)| names(key)) {
        Access::Role(role.clone())
    } else if auth.public.iter().any(names) {
        Access::Public
    } else {
        Access::SignedIn
    };
    let grpc_path = http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(path.as_bytes())).ok()?;
    Some(Published {
        grpc_path,
        path: path.into(),
        label: path.trim_start_matches('/').into(),
        idempotency: contract.idempotency,
        server_streaming: contract.server_streaming,
        client_streaming: contract.client_streaming,
        descriptor,
        access,
    })
}

/// The method's `google.api.http` rule and its additional bindings.
fn http_rules(method: &MethodDescriptor) -> Vec<HttpRule> {
    let Some(extension) = method.parent_pool().get_extension_by_name("google.api.http") else {
        return Vec::new();
    };
    let options = method.options();
    if !options.has_extension(&extension) {
        return Vec::new();
    }
    let Some(rule) = options
        .get_extension(&extension)
        .as_message()
        .and_then(|m| m.transcode_to::<HttpRule>().ok())
    else {
        return Vec::new();
    };
    let mut rules = rule.additional_bindings.clone();
    rules.insert(
        0,
        HttpRule {
            additional_bindings: Vec::new(),
            ..rule
        },
    );
    rules
}

fn route(rule: &HttpRule, method: &Arc<Published>) -> Result<Route, CatalogError> {
    let fail = |reason: String| CatalogError::Rule {
        method: method.label.to_string(),
        reason,
    };
    let (http_method, template) = match &rule.pattern {
        Some(Pattern::Get(t)) => (http::Method::GET, t.as_str()),
        Some(Pattern::Put(t)) => (http::Method::PUT, t.as_str()),
        Some(Pattern::Post(t)) => (http::Method::POST, t.as_str()),
        Some(Pattern::Delete(t)) => (http::Method::DELETE, t.as_str()),
        Some(Pattern::Patch(t)) => (http::Method::PATCH, t.as_str()),
        Some(Pattern::Custom(custom)) => (
            http::Method::from_bytes(custom.kind.as_bytes())
                .map_err(|_| fail(format!("'{}' is not an HTTP method", custom.kind)))?,
            custom.path.as_str(),
        ),
        None => return Err(fail("the HTTP rule has no pattern (get, post, ...)".into())),
    };
    let template = PathTemplate::parse(template).map_err(|source| CatalogError::Template {
        method: method.label.to_string(),
        source,
    })?;
    let input = method.descriptor.input();
    for variable in template.variables() {
        crate::rest::fields::resolve(&input, &variable.field_path)
            .map_err(|reason| fail(format!("path variable '{}': {reason}", variable.field_path)))?;
    }
    let body = match rule.body.as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        name => BodyRule::Field(
            input
                .get_field_by_name(name)
                .ok_or_else(|| fail(format!("body '{name}' is not a field of {}", input.full_name())))?,
        ),
    };
    let response_body = match rule.response_body.as_str() {
        "" => None,
        name => {
            let output = method.descriptor.output();
            Some(output.get_field_by_name(name).ok_or_else(|| {
                fail(format!(
                    "response_body '{name}' is not a field of {}",
                    output.full_name()
                ))
            })?)
        }
    };
    Ok(Route {
        http_method,
        template,
        body,
        response_body,
        method: method.clone(),
    })
}
