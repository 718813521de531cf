//! Reading `mesh.toml`: syntax and types through serde (with the path of the
//! offending key), then the rules serde cannot express.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    FileStamp,
    error::ConfigError,
    gateway::{GATEWAY_WORKLOAD, Gateway},
    model::{Client, MeshConfig, Service},
    policy::{Fault, RetryPolicy, Telemetry},
};

/// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    trust_domain: String,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default = "default_leaf_lifetime", with = "humantime_serde")]
    leaf_lifetime: Duration,
    #[serde(default)]
    services: BTreeMap<String, Service>,
    #[serde(default)]
    clients: BTreeMap<String, Client>,
    #[serde(default)]
    gateway: Option<Gateway>,
    #[serde(default = "default_replica_port_step")]
    replica_port_step: u16,
    #[serde(default)]
    retry: RetryPolicy,
    #[serde(default)]
    telemetry: Telemetry,
    #[serde(default)]
    discovery: crate::Discovery,
}

fn default_replica_port_step() -> u16 {
    1000
}

/// Most replicas of one service on one machine.
const MAX_REPLICAS: u16 = 64;

fn default_state_dir() -> PathBuf {
    PathBuf::from(".mesh")
}

fn default_leaf_lifetime() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

/// Shortest certificate lifetime we accept: renewal needs some room.
const MIN_LEAF_LIFETIME: Duration = Duration::from_secs(10 * 60);

impl MeshConfig {
    /// Reads and validates a `mesh.toml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let stamp = FileStamp::of(path);
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            file: path.to_path_buf(),
            cause,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.source_stamp = stamp;
        Ok(config)
    }

    /// Parses and validates `text`; `source` names it in errors, and its folder
    /// is what a relative `state_dir` is resolved against.
    pub fn parse(text: &str, source: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            file: source.to_path_buf(),
            key,
            reason,
        };
        let deserializer = toml::Deserializer::parse(text).map_err(|e| invalid(String::new(), describe(&e, text)))?;
        let raw: RawMesh = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            invalid(if key == "." { String::new() } else { key }, describe(e.inner(), text))
        })?;

        let base = source.parent().unwrap_or(Path::new("."));
        let mut services = raw.services;
        for service in services.values_mut() {
            resolve_paths(service, base);
        }
        let mut clients = raw.clients;
        let mut gateway = raw.gateway;
        if let Some(gateway) = &mut gateway {
            // The gateway's sidecar is a client's: an identity and an
            // outbound port, so certificates, launch and policy need nothing new.
            if clients.contains_key(GATEWAY_WORKLOAD) || services.contains_key(GATEWAY_WORKLOAD) {
                return Err(invalid(
                    format!("clients.{GATEWAY_WORKLOAD}"),
                    format!("'{GATEWAY_WORKLOAD}' is the [gateway]'s workload name; choose another name"),
                ));
            }
            let sidecar = &gateway.sidecar;
            clients.insert(
                GATEWAY_WORKLOAD.to_string(),
                Client {
                    outbound: sidecar.outbound,
                    admin: sidecar.admin,
                },
            );
            if let Some(tls) = &mut gateway.tls {
                tls.cert = base.join(&tls.cert);
                tls.key = base.join(&tls.key);
            }
        }
        let config = MeshConfig {
            source: source.to_path_buf(),
            source_stamp: FileStamp::default(),
            trust_domain: raw.trust_domain,
            state_dir: base.join(raw.state_dir),
            leaf_lifetime: raw.leaf_lifetime,
            services,
            clients,
            gateway,
            replica_port_step: raw.replica_port_step,
            discovery: raw.discovery,
            retry: raw.retry,
            telemetry: raw.telemetry,
        };
        validate(&config).map_err(|(key, reason)| invalid(key, reason))?;
        Ok(config)
    }
}

/// Makes a service's relative paths (its working folder, its contract
/// files) relative to mesh.toml's folder, as `state_dir` is.
fn resolve_paths(service: &mut Service, base: &Path) {
    service.workdir = Some(base.join(service.workdir.take().unwrap_or_default()));
    if let Some(contracts) = &mut service.contracts {
        if contracts.include.is_empty() && !contracts.protos.is_empty() {
            contracts.include.push(PathBuf::new());
        }
        for path in contracts.descriptor_sets.iter_mut().chain(&mut contracts.include) {
            *path = base.join(&*path);
        }
    }
}

/// A toml error's message with the line it points at, without the multi-line snippet.
fn describe(error: &toml::de::Error, text: &str) -> String {
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{} (line {line})", error.message().trim_end())
        }
        None => error.message().trim_end().to_string(),
    }
}

type Invalid = (String, String);

fn validate(config: &MeshConfig) -> Result<(), Invalid> {
    if !is_dns_like(&config.trust_domain) {
        return Err((
            "trust_domain".into(),
            format!(
                "'{}' is not a trust domain: use lowercase letters, digits, '-' and '.'",
                config.trust_domain
            ),
        ));
    }
    if config.leaf_lifetime < MIN_LEAF_LIFETIME {
        return Err((
            "leaf_lifetime".into(),
            format!(
                "must be at least {}",
                humantime_serde::re::humantime::format_duration(MIN_LEAF_LIFETIME)
            ),
        ));
    }
    if config.services.is_empty() {
        return Err(("services".into(), "the mesh has no services".into()));
    }

    // Every listening address must be distinct, and those only the local
    // machine should reach must be on loopback.
    let mut addresses: HashMap<SocketAddr, String> = HashMap::new();
    let mut claim = |key: String, addr: SocketAddr, loopback_only: bool| -> Result<(), Invalid> {
        if loopback_only && !addr.ip().is_loopback() {
            return Err((key, format!("{addr} must be a loopback address such as 127.0.0.1")));
        }
        if let Some(other) = addresses.insert(addr, key.clone()) {
            return Err((key, format!("{addr} is already used by {other}")));
        }
        Ok(())
    };

    let mut grpc_owner: HashMap<&str, &str> = HashMap::new();
    for (name, service) in &config.services {
        let key = |field: &str| format!("services.{name}.{field}");
        check_name(name, &format!("services.{name}"))?;
        if !(1..=MAX_REPLICAS).contains(&service.replicas) {
            return Err((
                key("replicas"),
                format!("must be from 1 to {MAX_REPLICAS}, got {}", service.replicas),
            ));
        }
        if service.replicas > 1 && config.replica_port_step == 0 {
            return Err((
                "replica_port_step".into(),
                "must be above 0 when a service has replicas".into(),
            ));
        }
        for index in 0..service.replicas {
            let Some(r) = service.replica(index, config.replica_port_step) else {
                return Err((
                    key("replicas"),
                    format!(
                        "replica {index}'s ports would pass 65535 (replica_port_step {})",
                        config.replica_port_step
                    ),
                ));
            };
            // Replica 0 is what the keys name; the others are derived from them.
            let key = |field: &str| match index {
                0 => format!("services.{name}.{field}"),
                _ => format!("services.{name}.{field} (replica {index})"),
            };
            claim(key("app"), r.app, true)?;
            claim(key("inbound"), r.inbound, false)?;
            claim(key("outbound"), r.outbound, true)?;
            // Admin serves only reads; in a pod the kubelet probes it.
            claim(key("admin"), r.admin, false)?;
        }
        if service.timeout.is_some_and(|t| t.is_zero()) {
            return Err((key("timeout"), "must be above 0".into()));
        }
        for (method, policy) in &service.methods {
            let method_key = format!("services.{name}.methods.\"{method}\"");
            check_method_pattern(method, service).map_err(|reason| (method_key.clone(), reason))?;
            if policy.timeout.is_some_and(|t| t.is_zero()) {
                return Err((format!("{method_key}.timeout"), "must be above 0".into()));
            }
        }
        for (i, fault) in service.faults.iter().enumerate() {
            check_fault(fault, service)
                .map_err(|(field, reason)| (format!("services.{name}.faults[{i}]{field}"), reason))?;
        }
        check_app(name, service)?;
        if service.grpc_services.is_empty() {
            return Err((
                key("grpc_services"),
                "list at least one gRPC service, for example \"shop.cart.v1.CartService\"".into(),
            ));
        }
        for (i, grpc) in service.grpc_services.iter().enumerate() {
            if !is_grpc_service_name(grpc) {
                return Err((
                    format!("services.{name}.grpc_services[{i}]"),
                    format!("'{grpc}' is not a fully qualified gRPC service name such as \"shop.cart.v1.CartService\""),
                ));
            }
            if let Some(other) = grpc_owner.insert(grpc, name) {
                return Err((
                    format!("services.{name}.grpc_services[{i}]"),
                    format!("'{grpc}' is already served by services.{other}"),
                ));
            }
        }
    }
    for (name, client) in &config.clients {
        check_name(name, &format!("clients.{name}"))?;
        if config.services.contains_key(name) {
            return Err((
                format!("clients.{name}"),
                format!("'{name}' is also a service; names must be unique"),
            ));
        }
        let prefix = match config.gateway.is_some() && name == GATEWAY_WORKLOAD {
            true => "gateway.sidecar".to_string(),
            false => format!("clients.{name}"),
        };
        claim(format!("{prefix}.outbound"), client.outbound, true)?;
        claim(format!("{prefix}.admin"), client.admin, false)?;
    }
    if let Some(gateway) = &config.gateway {
        check_gateway(gateway)?;
        for replica in 0..gateway.replicas {
            let Some((listen, admin)) = gateway.replica(replica, config.replica_port_step) else {
                return Err((
                    "gateway.replicas".into(),
                    format!("replica {replica}'s ports are past 65535"),
                ));
            };
            let key = |field: &str| match replica {
                0 => format!("gateway.{field}"),
                n => format!("gateway.{field} (replica {n})"),
            };
            claim(key("listen"), listen, false)?;
            // Not loopback-only: in a pod the kubelet probes it.
            claim(key("admin"), admin, false)?;
        }
    }

    for (name, service) in &config.services {
        for (i, rule) in service.allow.iter().flatten().enumerate() {
            let key = format!("services.{name}.allow[{i}]");
            if !config.services.contains_key(&rule.from) && !config.clients.contains_key(&rule.from) {
                return Err((format!("{key}.from"), format!("unknown workload '{}'", rule.from)));
            }
            for (j, method) in rule.methods.iter().enumerate() {
                check_method_pattern(method, service).map_err(|reason| (format!("{key}.methods[{j}]"), reason))?;
            }
        }
    }
    config.discovery.check()?;
    check_retry(&config.retry)
}

/// The gateway's bounds and CORS origins (its method keys are checked
/// against the contracts, by the contracts crate).
fn check_gateway(gateway: &Gateway) -> Result<(), Invalid> {
    let limits = &gateway.limits;
    let positive = [
        ("max_header_bytes", limits.max_header_bytes),
        ("max_headers", limits.max_headers),
        ("max_body_bytes", limits.max_body_bytes),
        ("max_connections", limits.max_connections),
        ("max_streams", limits.max_streams as usize),
    ];
    if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
        return Err((format!("gateway.limits.{field}"), "must be at least 1".into()));
    }
    for (field, value) in [
        ("header_timeout", limits.header_timeout),
        ("request_timeout", limits.request_timeout),
    ] {
        if value.is_zero() {
            return Err((format!("gateway.limits.{field}"), "must be longer than 0s".into()));
        }
    }
    for (i, origin) in gateway.cors.origins.iter().enumerate() {
        let looks_right = origin == "*"
            || ((origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin.parse::<http::Uri>().is_ok());
        if !looks_right {
            return Err((
                format!("gateway.cors.origins[{i}]"),
                format!(
                    "'{origin}' is not an origin such as \"https://shop.example\" (scheme and host, no path) or \"*\""
                ),
            ));
        }
    }
    if gateway.auth.issuer.is_empty() || gateway.auth.audience.is_empty() {
        return Err(("gateway.auth".into(), "issuer and audience must not be empty".into()));
    }
    gateway.check_policy()
}

/// How the app starts and where its contracts come from.
/// A PostgreSQL URL, checked as far as a URL goes (the app's driver reads the
/// rest when it connects). The reason never quotes the URL: it may hold a password.
fn check_database_url(url: &str) -> Result<(), String> {
    const EXAMPLE: &str =
        "write postgres://user:password@host:5432/database, or leave the key out for SQLite in the state folder";
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e}); {EXAMPLE}"))?;
    match uri.scheme_str() {
        Some("postgres" | "postgresql") => {}
        Some(other) => return Err(format!("'{other}' is not a database Meshwork speaks; {EXAMPLE}")),
        None => return Err(format!("the URL names no scheme; {EXAMPLE}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("the URL names no host; {EXAMPLE}"));
    }
    let authority = uri.authority().map_or("", |a| a.as_str());
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if let Some((_, port)) = host_port.rsplit_once(':').filter(|_| !host_port.ends_with(']'))
        && port.parse::<u16>().is_err()
    {
        return Err(format!("port '{port}' is not a number from 0 to 65535; {EXAMPLE}"));
    }
    Ok(())
}

fn check_app(name: &str, service: &Service) -> Result<(), Invalid> {
    let key = |field: &str| format!("services.{name}.{field}");
    if service.command.first().is_some_and(|program| program.trim().is_empty()) {
        return Err((key("command[0]"), "the program to run is empty".into()));
    }
    if let Some(var) = service.env.keys().find(|k| k.is_empty() || k.contains('=')) {
        return Err((key("env"), format!("'{var}' is not an environment variable name")));
    }
    if let Some(url) = &service.database {
        check_database_url(url.as_str()).map_err(|reason| (key("database"), reason))?;
    }
    if let Some(contracts) = &service.contracts {
        let files = contracts.files().count();
        if files == 0 && !contracts.reflection {
            return Err((
                key("contracts"),
                "name descriptor_sets, protos, or reflection = true".into(),
            ));
        }
        if files > 0 && contracts.reflection {
            return Err((
                key("contracts.reflection"),
                "use either files (descriptor_sets, protos) or reflection, not both".into(),
            ));
        }
        if let Some(proto) = contracts.protos.iter().find(|p| p.is_absolute()) {
            return Err((
                key("contracts.protos"),
                format!(
                    "'{}' must be relative to an include folder, as it is imported",
                    proto.display()
                ),
            ));
        }
    }
    Ok(())
}

fn check_method_pattern(method: &str, service: &Service) -> Result<(), String> {
    let ok = match method.split_once('/') {
        Some((grpc, m)) => service.grpc_services.iter().any(|g| g == grpc) && is_identifier(m),
        None => is_identifier(method),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{method}' is neither a method name nor 'Service/Method' of one of {:?}",
            service.grpc_services
        ))
    }
}

fn check_fault(fault: &Fault, service: &Service) -> Result<(), Invalid> {
    for (j, method) in fault.methods.iter().enumerate() {
        check_method_pattern(method, service).map_err(|reason| (format!(".methods[{j}]"), reason))?;
    }
    let percent_ok = |p: f64| (0.0..=100.0).contains(&p);
    match (&fault.abort, &fault.delay) {
        (None, None) => Err((String::new(), "give an abort, a delay, or both".into())),
        (Some(abort), _) if !percent_ok(abort.percent) => Err((
            ".abort.percent".into(),
            format!("must be from 0 to 100, got {}", abort.percent),
        )),
        (Some(abort), _) if abort.status == crate::GrpcCode::Ok => {
            Err((".abort.status".into(), "an abort needs an error status, not OK".into()))
        }
        (_, Some(delay)) if !percent_ok(delay.percent) => Err((
            ".delay.percent".into(),
            format!("must be from 0 to 100, got {}", delay.percent),
        )),
        _ => Ok(()),
    }
}

fn check_retry(retry: &RetryPolicy) -> Result<(), Invalid> {
    let key = |field: &str| format!("retry.{field}");
    if !(0.0..=1.0).contains(&retry.budget_ratio) {
        return Err((
            key("budget_ratio"),
            format!("must be from 0 to 1, got {}", retry.budget_ratio),
        ));
    }
    if !(1..=10).contains(&retry.max_attempts) {
        return Err((
            key("max_attempts"),
            format!("must be from 1 to 10, got {}", retry.max_attempts),
        ));
    }
    if retry.backoff_base > retry.backoff_max {
        return Err((key("backoff_base"), "must not exceed retry.backoff_max".into()));
    }
    Ok(())
}

fn check_name(name: &str, key: &str) -> Result<(), Invalid> {
    let ok = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err((
            key.into(),
            format!(
                "'{name}' is not a workload name: start with a lowercase letter, then lowercase letters, digits or '-'"
            ),
        ))
    }
}

fn is_dns_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn is_identifier(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_grpc_service_name(s: &str) -> bool {
    s.contains('.') && s.split('.').all(is_identifier)
}
