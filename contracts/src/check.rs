//! mesh.toml checked against the contracts: every key that names a method
//! (`methods`, `faults[].methods`, `allow[].methods`) must name one the
//! service's contracts define, where they are known. A typo is refused with
//! the file, the key and the closest name:
//! `services.reviews.faults[0].methods[1]: no method 'GetReveiw' in
//! reviews.v1.ReviewService; did you mean 'GetReview'?`. Where a service's
//! contracts are not known (no source, or reflection not read yet), any
//! well-formed name is accepted, as before.

use meshwork_config::{ConfigError, MeshConfig, Service};

use crate::registry::Registry;

/// Checks every method name in `config` against `registry`.
pub fn check(config: &MeshConfig, registry: &Registry) -> Result<(), ConfigError> {
    for (name, service) in &config.services {
        let prefix = format!("services.{name}");
        let keys = service
            .methods
            .keys()
            .map(|m| (format!("{prefix}.methods.\"{m}\""), m))
            .chain(service.faults.iter().enumerate().flat_map(|(i, f)| {
                let prefix = &prefix;
                f.methods
                    .iter()
                    .enumerate()
                    .map(move |(j, m)| (format!("{prefix}.faults[{i}].methods[{j}]"), m))
            }))
            .chain(service.allow.iter().flatten().enumerate().flat_map(|(i, rule)| {
                let prefix = &prefix;
                rule.methods
                    .iter()
                    .enumerate()
                    .map(move |(j, m)| (format!("{prefix}.allow[{i}].methods[{j}]"), m))
            }));
        for (key, method) in keys {
            check_method(method, service, registry).map_err(|reason| ConfigError::Invalid {
                file: config.source.clone(),
                key,
                reason,
            })?;
        }
    }
    if let Some(gateway) = &config.gateway {
        let auth = &gateway.auth;
        let keys = auth
            .public
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("gateway.auth.public[{i}]"), m))
            .chain(auth.roles.keys().map(|m| (format!("gateway.auth.roles.\"{m}\""), m)))
            .chain(gateway.rate_limits.iter().enumerate().flat_map(|(i, limit)| {
                limit
                    .methods
                    .iter()
                    .enumerate()
                    .map(move |(j, m)| (format!("gateway.rate_limits[{i}].methods[{j}]"), m))
            }));
        for (key, method) in keys {
            check_gateway_method(method, registry).map_err(|reason| ConfigError::Invalid {
                file: config.source.clone(),
                key,
                reason,
            })?;
        }
    }
    if let Some(gateway) = &config.gateway {
        for (i, rule) in gateway.cache.iter().enumerate() {
            for (j, method) in rule.methods.iter().enumerate() {
                check_gateway_method(method, registry)
                    .and_then(|()| check_cacheable(method, registry))
                    .map_err(|reason| ConfigError::Invalid {
                        file: config.source.clone(),
                        key: format!("gateway.cache[{i}].methods[{j}]"),
                        reason,
                    })?;
            }
        }
    }
    Ok(())
}

/// A cached answer stands in for a call, so only a method whose contract
/// says it changes nothing (`idempotency_level = NO_SIDE_EFFECTS`) and
/// answers with one message may be cached. A service whose contract is
/// not known yet is checked again when the gateway builds its table.
fn check_cacheable(pattern: &str, registry: &Registry) -> Result<(), String> {
    let grpc_service = pattern.split_once('/').map_or(pattern, |(service, _)| service);
    for (name, path, contract) in registry.methods_of(grpc_service) {
        if !meshwork_config::gateway_pattern_matches(pattern, path.trim_start_matches('/')) {
            continue;
        }
        if contract.idempotency != crate::Idempotency::NoSideEffects {
            return Err(format!(
                "{grpc_service}/{name} may change something (its contract does not say idempotency_level = NO_SIDE_EFFECTS), so its answers cannot be cached"
            ));
        }
        if contract.server_streaming || contract.client_streaming {
            return Err(format!("{grpc_service}/{name} streams; only unary methods are cached"));
        }
    }
    Ok(())
}

/// A gateway key is `pkg.Service` or `pkg.Service/Method`, fully qualified,
/// since the gateway fronts every service.
fn check_gateway_method(pattern: &str, registry: &Registry) -> Result<(), String> {
    let (grpc_service, method) = match pattern.split_once('/') {
        Some((service, method)) => (service, Some(method)),
        None => (pattern, None),
    };
    if !grpc_service.contains('.') {
        return Err(format!(
            "'{pattern}' must name a fully qualified gRPC service, such as \"shop.catalog.v1.CatalogService/ListProducts\""
        ));
    }
    if !registry.knows(grpc_service) {
        // A service whose contract is read later (reflection) is accepted.
        return Ok(());
    }
    let Some(method) = method else { return Ok(()) };
    let names: Vec<&str> = registry.methods_of(grpc_service).map(|(name, _, _)| name).collect();
    if names.contains(&method) {
        return Ok(());
    }
    Err(not_found(method, grpc_service, names.into_iter()))
}

/// `pattern` is `Method` (in any of the service's gRPC services) or
/// `pkg.Service/Method`; the parser has checked its form.
fn check_method(pattern: &str, service: &Service, registry: &Registry) -> Result<(), String> {
    let (searched, method): (Vec<&str>, &str) = match pattern.split_once('/') {
        Some((grpc_service, method)) => (vec![grpc_service], method),
        None => (service.grpc_services.iter().map(String::as_str).collect(), pattern),
    };
    if !searched.iter().all(|g| registry.knows(g)) {
        return Ok(());
    }
    let mut candidates = searched
        .iter()
        .flat_map(|g| registry.methods_of(g).map(|(name, _, _)| name));
    if candidates.any(|name| name == method) {
        return Ok(());
    }
    let known = searched
        .iter()
        .flat_map(|g| registry.methods_of(g).map(|(name, _, _)| name));
    Err(not_found(method, &searched.join(" or "), known))
}

/// "no method 'GetReveiw' in reviews.v1.ReviewService; did you mean
/// 'GetReview'?", the suggestion when a known name is close enough.
fn not_found<'a>(method: &str, searched: &str, known: impl Iterator<Item = &'a str>) -> String {
    let closest = known
        .map(|name| (strsim::damerau_levenshtein(name, method), name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(2))
        .min();
    let mut reason = format!("no method '{method}' in {searched}");
    if let Some((_, name)) = closest {
        reason.push_str(&format!("; did you mean '{name}'?"));
    }
    reason
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::set::ContractSet;

    fn checked(extra: &str) -> Result<(), ConfigError> {
        let text = format!(
            r#"
            trust_domain = "t.local"
            [services.catalog]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:2"
            outbound = "127.0.0.1:3"
            admin = "127.0.0.1:4"
            grpc_services = ["shop.catalog.v1.CatalogService"]
            {extra}
            [services.reviews]
            app = "127.0.0.1:11"
            inbound = "127.0.0.1:12"
            outbound = "127.0.0.1:13"
            admin = "127.0.0.1:14"
            grpc_services = ["reviews.v1.ReviewService"]
            methods = {{ GetReveiw = {{ idempotent = true }} }}
            "#
        );
        let config = MeshConfig::parse(&text, std::path::Path::new("/m/mesh.toml")).expect("parses");
        check(
            &config,
            &Registry::build(&config, &ContractSet::compiled_in(), &BTreeMap::new()),
        )
    }

    #[test]
    fn gateway_keys_name_real_methods() {
        let gateway = r#"
            [gateway]
            listen = "127.0.0.1:21"
            admin = "127.0.0.1:22"
            sidecar = { outbound = "127.0.0.1:23", admin = "127.0.0.1:24" }
            [gateway.auth]
            public = ["shop.catalog.v1.CatalogService/ListProdcts"]
            "#;
        let error = checked_with_gateway(gateway).expect_err("a typo").to_string();
        assert_eq!(
            error,
            "/m/mesh.toml: gateway.auth.public[0]: no method 'ListProdcts' in shop.catalog.v1.CatalogService; did you mean 'ListProducts'?"
        );
        let short = gateway.replace("shop.catalog.v1.CatalogService/ListProdcts", "ListProducts");
        let error = checked_with_gateway(&short).expect_err("not qualified").to_string();
        assert!(error.contains("must name a fully qualified gRPC service"), "{error}");
        let fine = gateway.replace("ListProdcts", "ListProducts");
        checked_with_gateway(&fine).expect("a real method");
    }

    #[test]
    fn cache_rules_take_only_side_effect_free_unary_methods_and_limits_real_ones() {
        let gateway = |extra: &str| {
            format!(
                r#"
            [gateway]
            listen = "127.0.0.1:21"
            admin = "127.0.0.1:22"
            sidecar = {{ outbound = "127.0.0.1:23", admin = "127.0.0.1:24" }}
            {extra}
            "#
            )
        };
        let cache = |methods: &str| gateway(&format!("[[gateway.cache]]\nmethods = [{methods}]\nttl = \"5s\""));
        checked_with_gateway(&cache(r#""shop.catalog.v1.CatalogService/GetProduct""#)).expect("cacheable");
        let error = checked_with_gateway(&cache(r#""shop.catalog.v1.CatalogService/UpdateProduct""#))
            .expect_err("a write")
            .to_string();
        assert!(
            error.starts_with("/m/mesh.toml: gateway.cache[0].methods[0]: shop.catalog.v1.CatalogService/UpdateProduct may change something"),
            "{error}"
        );
        let error = checked_with_gateway(&cache(r#""shop.catalog.v1.CatalogService""#))
            .expect_err("a service with writes")
            .to_string();
        assert!(
            error.contains("cannot be cached") || error.contains("streams"),
            "{error}"
        );
        let error = checked_with_gateway(&cache(r#""shop.catalog.v1.CatalogService/WatchProducts""#))
            .expect_err("a stream")
            .to_string();
        assert!(
            error.ends_with("WatchProducts streams; only unary methods are cached"),
            "{error}"
        );
        let limit = gateway(
            "[[gateway.rate_limits]]\nmethods = [\"shop.catalog.v1.CatalogService/GetProdct\"]\nkey = \"user\"\nrate = \"1/s\"",
        );
        let error = checked_with_gateway(&limit).expect_err("a typo").to_string();
        assert!(
            error.contains("gateway.rate_limits[0].methods[0]: no method 'GetProdct'"),
            "{error}"
        );
    }

    fn checked_with_gateway(gateway: &str) -> Result<(), ConfigError> {
        let text = format!(
            r#"
            trust_domain = "t.local"
            [services.catalog]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:2"
            outbound = "127.0.0.1:3"
            admin = "127.0.0.1:4"
            grpc_services = ["shop.catalog.v1.CatalogService"]
            {gateway}
            "#
        );
        let config = MeshConfig::parse(&text, std::path::Path::new("/m/mesh.toml")).expect("parses");
        check(
            &config,
            &Registry::build(&config, &ContractSet::compiled_in(), &BTreeMap::new()),
        )
    }

    #[test]
    fn known_methods_pass_and_unknown_contracts_accept_any_name() {
        checked(r#"allow = [{ from = "reviews", methods = ["GetProduct", "shop.catalog.v1.CatalogService/ListProducts"] }]"#)
            .expect("valid");
    }

    #[test]
    fn a_typo_is_refused_with_the_closest_name() {
        let error = checked(
            r#"
            [[services.catalog.faults]]
            methods = ["GetProduct", "GetPorduct"]
            abort = { percent = 1, status = "UNAVAILABLE" }
            "#,
        )
        .expect_err("typo");
        assert_eq!(
            error.to_string(),
            "/m/mesh.toml: services.catalog.faults[0].methods[1]: no method 'GetPorduct' in \
             shop.catalog.v1.CatalogService; did you mean 'GetProduct'?"
        );
        let error = checked(r#"methods = { "shop.catalog.v1.CatalogService/Frobnicate" = { timeout = "1s" } }"#)
            .expect_err("unknown");
        assert_eq!(
            error.to_string(),
            "/m/mesh.toml: services.catalog.methods.\"shop.catalog.v1.CatalogService/Frobnicate\": \
             no method 'Frobnicate' in shop.catalog.v1.CatalogService"
        );
    }
}
