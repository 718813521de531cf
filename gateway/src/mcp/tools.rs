//! The tool table: which published methods are tools, under which names,
//! with which descriptions, schemas and annotations. Built from the
//! gateway's catalog (so from the contract registry and the mesh's policy)
//! and `[gateway.mcp]`, again whenever the catalog changes.
//!
//! Names: `<service>_<method>` in snake case, the service without its
//! `Service` suffix (`shop.catalog.v1.CatalogService/ListProducts` is
//! `catalog_list_products`). Two services of one short name (two packages,
//! two versions) both get their package in front; a name above 64
//! characters is cut and ends with a hash of the full one, so names stay
//! stable across restarts and match `^[a-zA-Z0-9_-]{1,64}$`.

use std::{collections::HashMap, sync::Arc};

use meshwork_config::{Mcp as McpConfig, method_matches};
use meshwork_contracts::Idempotency;
use prost_reflect::Kind;
use rmcp::model::{Tool as ToolDef, ToolAnnotations};
use serde_json::{Map, Value, json};

use super::{
    comments,
    schema::{self, Direction},
};
use crate::catalog::{Access, Catalog, Published};

/// The longest tool name every common client accepts.
pub const MAX_NAME: usize = 64;

/// One tool: the method behind it and what the call needs.
#[derive(Debug)]
pub struct Tool {
    pub def: ToolDef,
    pub method: Arc<Published>,
    /// Top-level string fields bound in a REST path (`user_id`): the value
    /// `me` stands for the signed-in user, as over REST.
    pub me_fields: Vec<String>,
    /// JSON names of the input fields the contract marks REQUIRED.
    pub required: Vec<String>,
}

/// Every tool of one catalog.
#[derive(Debug, Default)]
pub struct Tools {
    by_name: HashMap<String, Arc<Tool>>,
    /// By name, so listings are stable.
    ordered: Vec<Arc<Tool>>,
    /// The catalog this table was built from (compared by address).
    pub(super) source: usize,
}

impl Tools {
    pub fn build(catalog: &Arc<Catalog>, config: &McpConfig, stream_note: &str) -> Tools {
        let mut methods: Vec<&Arc<Published>> = catalog
            .methods()
            .filter(|m| !m.client_streaming && offered(catalog, config, m))
            .collect();
        methods.sort_by(|a, b| a.path.cmp(&b.path));
        let short: Vec<String> = methods.iter().map(|m| short_name(m)).collect();
        let mut ordered = Vec::with_capacity(methods.len());
        for (i, method) in methods.iter().enumerate() {
            let clash = short.iter().filter(|s| **s == short[i]).count() > 1;
            let name = if clash { long_name(method) } else { short[i].clone() };
            ordered.push(Arc::new(tool(catalog, config, method, name, stream_note)));
        }
        ordered.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        Tools {
            by_name: ordered.iter().map(|t| (t.def.name.to_string(), t.clone())).collect(),
            ordered,
            source: Arc::as_ptr(catalog) as usize,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tool>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tool>> {
        self.ordered.iter()
    }
}

/// Whether `method` is offered: named in `tools`, or (by default) published over REST.
fn offered(catalog: &Catalog, config: &McpConfig, method: &Published) -> bool {
    let service = method.descriptor.parent_service().full_name();
    let name = method.descriptor.name();
    match &config.tools {
        Some(keys) => keys.iter().any(|k| names(k, service, name)),
        None => catalog.routes().iter().any(|r| r.method.path == method.path),
    }
}

/// Refuses `[gateway.mcp]` keys (`tools`, `destructive`) that name no method
/// of any contract: a typo would otherwise quietly publish nothing.
pub fn check_keys(mesh: &meshwork_contracts::Mesh, config: &McpConfig) -> Result<(), String> {
    let keys = config
        .tools
        .iter()
        .flatten()
        .map(|k| ("tools", k))
        .chain(config.destructive.iter().map(|k| ("destructive", k)));
    for (list, key) in keys {
        let known = mesh.registry.methods().any(|(_, contract)| {
            let method = &contract.descriptor;
            names(key, method.parent_service().full_name(), method.name())
        });
        if !known {
            return Err(format!(
                "gateway.mcp.{list}: '{key}' names no method of the mesh's contracts (write pkg.Service/Method, Service/Method, pkg.Service or Method)"
            ));
        }
    }
    Ok(())
}

/// A mesh.toml key for a method: `pkg.Service/Method`, `Service/Method`, `pkg.Service` or `Method`.
fn names(key: &str, service: &str, method: &str) -> bool {
    let short_service = service.rsplit('.').next().unwrap_or(service);
    key == service || method_matches(key, service, method) || method_matches(key, short_service, method)
}

fn tool(catalog: &Catalog, config: &McpConfig, method: &Arc<Published>, name: String, stream_note: &str) -> Tool {
    let descriptor = &method.descriptor;
    let service = descriptor.parent_service();
    let input = descriptor.input();
    let routes: Vec<_> = catalog
        .routes()
        .iter()
        .filter(|r| Arc::ptr_eq(&r.method, method))
        .collect();
    let me_fields: Vec<String> = routes
        .iter()
        .flat_map(|r| r.template.variables())
        .filter(|v| !v.field_path.contains('.'))
        .filter(|v| {
            input
                .get_field_by_name(&v.field_path)
                .is_some_and(|f| matches!(f.kind(), Kind::String))
        })
        .map(|v| v.field_path.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();

    let mut description = comments::of(&descriptor.parent_file(), descriptor.path())
        .unwrap_or_else(|| format!("Calls {}.", method.label));
    if let Some(about) = comments::of(&service.parent_file(), service.path()) {
        description.push_str(&format!("\n\nService {}: {about}", service.name()));
    }
    match &method.access {
        Access::Public => {}
        Access::SignedIn => description.push_str("\n\nNeeds a signed-in user."),
        Access::Role(role) => description.push_str(&format!("\n\nNeeds a signed-in user with the role '{role}'.")),
    }
    for field in &me_fields {
        description.push_str(&format!("\n\n`{field}`: \"me\" stands for the signed-in user."));
    }
    if method.server_streaming {
        description.push_str("\n\n");
        description.push_str(stream_note);
    }

    let input_schema = schema::message_schema(&input, Direction::Input);
    let required = input_schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let output = schema::message_schema(&descriptor.output(), Direction::Output);
    let output_schema = if method.server_streaming {
        let mut item = output;
        if let Value::Object(map) = &mut item {
            map.remove("$schema");
        }
        json!({
            "$schema": schema::DIALECT,
            "type": "object",
            "properties": {"messages": {"type": "array", "items": item, "description": "The messages the stream sent, in order."}},
            "required": ["messages"],
            "additionalProperties": false
        })
    } else {
        output
    };

    let destructive = routes.iter().any(|r| r.http_method == http::Method::DELETE)
        || config
            .destructive
            .iter()
            .any(|k| names(k, service.full_name(), descriptor.name()));
    let read_only = method.idempotency == Idempotency::NoSideEffects;
    let mut annotations = ToolAnnotations::with_title(title(descriptor.name(), service.name()))
        .read_only(read_only)
        .destructive(destructive && !read_only)
        .idempotent(read_only || method.idempotency == Idempotency::Idempotent)
        .open_world(false);
    annotations.title = Some(title(descriptor.name(), service.name()));

    let def = ToolDef::new(name, description, Arc::new(object(input_schema)))
        .with_raw_output_schema(Arc::new(object(output_schema)))
        .with_annotations(annotations);
    Tool {
        def,
        method: method.clone(),
        me_fields,
        required,
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `ListProducts` of `CatalogService`: "List products (catalog)".
fn title(method: &str, service: &str) -> String {
    let words = snake(method).replace('_', " ");
    let mut chars = words.chars();
    let first = chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>())
        .unwrap_or_default();
    format!(
        "{first}{} ({})",
        chars.as_str(),
        snake(service_stem(service)).replace('_', " ")
    )
}

fn service_stem(service: &str) -> &str {
    service
        .strip_suffix("Service")
        .filter(|s| !s.is_empty())
        .unwrap_or(service)
}

fn short_name(method: &Published) -> String {
    let descriptor = &method.descriptor;
    let service = descriptor.parent_service();
    bounded(format!(
        "{}_{}",
        snake(service_stem(service.name())),
        snake(descriptor.name())
    ))
}

fn long_name(method: &Published) -> String {
    let descriptor = &method.descriptor;
    let service = descriptor.parent_service();
    let package: String = service
        .package_name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    bounded(format!(
        "{package}_{}_{}",
        snake(service_stem(service.name())),
        snake(descriptor.name())
    ))
}

/// At most [`MAX_NAME`] characters: a longer name keeps its start and ends
/// with a hash of the whole (FNV-1a, so it is the same in every build).
fn bounded(name: String) -> String {
    if name.len() <= MAX_NAME {
        return name;
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}_{:08x}", &name[..MAX_NAME - 9], hash as u32)
}

/// `ListProducts` → `list_products`; anything but ASCII letters and digits → `_`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if previous_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            previous_lower = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
            previous_lower = true;
        } else {
            out.push('_');
            previous_lower = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_snake_case_and_bounded() {
        assert_eq!(snake("ListProducts"), "list_products");
        assert_eq!(snake("GetJwks"), "get_jwks");
        assert_eq!(service_stem("CatalogService"), "Catalog");
        assert_eq!(service_stem("Service"), "Service");
        assert_eq!(title("ListProducts", "CatalogService"), "List products (catalog)");
        let long = bounded("a".repeat(100));
        assert_eq!(long.len(), MAX_NAME);
        assert_eq!(long, bounded("a".repeat(100)), "stable");
        assert_ne!(long, bounded("a".repeat(101)));
        let valid = |n: &str| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        assert!(valid(&long) && valid(&snake("Odd.Name-1")));
    }
}
