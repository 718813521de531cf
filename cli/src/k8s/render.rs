//! The Kubernetes objects of a mesh, as JSON values (written out as YAML):
//! the namespace, the ConfigMap with the pods' mesh.toml and contracts, and per service a
//! headless Service and a Deployment whose pods run the sidecar as a native
//! sidecar (an init container with `restartPolicy: Always`: the app starts
//! once the sidecar is up, and the sidecar outlives the app at shutdown)
//! beside the app; the gateway as a Deployment behind a LoadBalancer.
//!
//! The containers run what `mesh up` runs, with the same arguments:
//! `mesh proxy --config <file> --name <workload> --replica 0` beside
//! `mesh serve <service> --listen ... --sidecar ... --data-dir ...` (or the
//! service's own `command`, with the `MESH_*` environment).

use std::{collections::BTreeMap, net::SocketAddr};

use anyhow::{Result, bail};
use base64::{Engine, prelude::BASE64_STANDARD};
use meshwork_config::{GATEWAY_WORKLOAD, MeshConfig, Service, app_env};
use serde_json::{Value, json};

use super::layout::{self, PROXY_CONTAINER};

/// What the render needs besides mesh.toml.
pub struct Options<'a> {
    pub namespace: &'a str,
    /// The image with the `mesh` binary, for every container.
    pub image: &'a str,
    /// Images for apps that are not the shop's built-in ones, by service.
    pub app_images: &'a BTreeMap<String, String>,
    /// The rewritten mesh.toml (see `pod_config`).
    pub pod_config: &'a str,
    /// The contract sets it names, by file name (see `contracts`).
    pub contracts: &'a BTreeMap<String, Vec<u8>>,
    pub database: &'a super::database::Database,
    pub cluster_domain: &'a str,
}

/// Every object, in the order `kubectl apply` wants them.
pub fn objects(config: &MeshConfig, opts: &Options<'_>) -> Result<Vec<Value>> {
    let mut out = vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": opts.namespace, "labels": labels("mesh") },
        }),
        config_map(opts),
    ];
    out.extend(opts.database.objects(
        |name| metadata(name, name, opts),
        selector(super::database::POSTGRES),
        labels(super::database::POSTGRES),
    ));
    for (name, service) in &config.services {
        out.push(headless_service(name, service, opts));
        out.push(service_deployment(name, service, opts)?);
    }
    if let Some(gateway) = &config.gateway {
        let tls = gateway.tls.is_some();
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(GATEWAY_WORKLOAD, GATEWAY_WORKLOAD, opts),
            "spec": {
                "type": "LoadBalancer",
                "selector": selector(GATEWAY_WORKLOAD),
                "ports": [{
                    "name": if tls { "https" } else { "http" },
                    "port": if tls { 443 } else { 80 },
                    "targetPort": "http",
                    "protocol": "TCP",
                }],
            },
        }));
        let mut volumes = vec![
            config_volume(),
            secret_volume("certs", &layout::cert_secret(GATEWAY_WORKLOAD)),
        ];
        let mut mounts = vec![config_mount()];
        if tls {
            volumes.push(secret_volume("gateway-tls", &layout::gateway_tls_secret()));
            mounts.push(json!({ "name": "gateway-tls", "mountPath": layout::GATEWAY_TLS_DIR, "readOnly": true }));
        }
        let container = json!({
            "name": GATEWAY_WORKLOAD,
            "image": opts.image,
            "command": ["mesh", "gateway", "--config", layout::CONFIG_PATH],
            "ports": [
                { "name": "http", "containerPort": gateway.listen.port() },
                { "name": "gateway-admin", "containerPort": gateway.admin.port() },
            ],
            "readinessProbe": probe("/ready", "gateway-admin", 5, 3),
            "livenessProbe": probe("/live", "gateway-admin", 10, 3),
            "resources": resources(layout::APP_RESOURCES),
            "securityContext": container_security(),
            "volumeMounts": mounts,
        });
        let sidecar = sidecar_container(GATEWAY_WORKLOAD, None, gateway.sidecar.admin, opts);
        out.push(deployment(
            GATEWAY_WORKLOAD,
            gateway.replicas,
            sidecar,
            container,
            volumes,
            opts,
        ));
        if gateway.rate_limit_store.redis.as_deref() == Some("local") {
            out.extend(redis(opts));
        }
    }
    Ok(out)
}

/// The pods' mesh.toml and the contract sets it names, mounted in every
/// sidecar and the gateway.
fn config_map(opts: &Options<'_>) -> Value {
    let mut map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(layout::CONFIG_MAP, "mesh", opts),
        "data": { layout::CONFIG_FILE: opts.pod_config },
    });
    if !opts.contracts.is_empty() {
        let encoded: serde_json::Map<String, Value> = opts
            .contracts
            .iter()
            .map(|(file, bytes)| (file.clone(), BASE64_STANDARD.encode(bytes).into()))
            .collect();
        map["binaryData"] = encoded.into();
    }
    map
}

/// The Redis the gateway's replicas share their rate-limit counters in,
/// when mesh.toml asks for a local one (`rate_limit_store.redis = "local"`):
/// counters only, so nothing is saved.
fn redis(opts: &Options<'_>) -> Vec<Value> {
    let name = layout::REDIS;
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(name, name, opts),
            "spec": {
                "selector": selector(name),
                "ports": [{ "name": "redis", "port": layout::REDIS_PORT, "targetPort": "redis", "protocol": "TCP" }],
            },
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(name, name, opts),
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": selector(name) },
                "template": {
                    "metadata": { "labels": labels(name) },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 999,
                            "runAsGroup": 999,
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "containers": [{
                            "name": name,
                            "image": "docker.io/library/redis:7",
                            "args": ["--save", "", "--appendonly", "no"],
                            "ports": [{ "name": "redis", "containerPort": layout::REDIS_PORT }],
                            "readinessProbe": {
                                "exec": { "command": ["redis-cli", "ping"] },
                                "periodSeconds": 5,
                                "timeoutSeconds": 1,
                            },
                            "resources": resources(layout::APP_RESOURCES),
                            "securityContext": container_security(),
                            "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
                        }],
                        "volumes": [{ "name": "data", "emptyDir": {} }],
                    },
                },
            },
        }),
    ]
}

fn labels(component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/part-of": "meshwork",
        "app.kubernetes.io/managed-by": "mesh-k8s",
    })
}

fn selector(workload: &str) -> Value {
    json!({ "app.kubernetes.io/name": workload, "app.kubernetes.io/part-of": "meshwork" })
}

fn metadata(name: &str, component: &str, opts: &Options<'_>) -> Value {
    json!({ "name": name, "namespace": opts.namespace, "labels": labels(component) })
}

/// The mesh port's headless Service: its DNS name lists the ready pods,
/// which is what every caller's sidecar follows.
fn headless_service(name: &str, service: &Service, opts: &Options<'_>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, name, opts),
        "spec": {
            "clusterIP": "None",
            "selector": selector(name),
            "ports": [{ "name": "mesh", "port": service.inbound.port(), "targetPort": "mesh", "protocol": "TCP" }],
        },
    })
}

fn service_deployment(name: &str, service: &Service, opts: &Options<'_>) -> Result<Value> {
    let (app, outbound) = (service.app, service.outbound);
    let mut env: Vec<Value> = [
        (app_env::SERVICE, name.to_string()),
        // Each pod is replica 0 of itself; replicas are pods.
        (app_env::REPLICA, "0".to_string()),
        (app_env::LISTEN, app.to_string()),
        (app_env::OUTBOUND, outbound.to_string()),
        (app_env::DATA_DIR, layout::DATA_DIR.to_string()),
        ("OTEL_SERVICE_NAME", name.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| json!({ "name": k, "value": v }))
    .collect();
    env.extend(service.env.iter().map(|(k, v)| json!({ "name": k, "value": v })));
    env.extend(opts.database.app_env(service, opts.namespace, opts.cluster_domain));
    let (image, command) = match (service.command.is_empty(), crate::serve::known_service(name)) {
        (false, _) => (
            opts.app_images.get(name).map_or(opts.image, String::as_str),
            service.command.clone(),
        ),
        (true, true) => (
            opts.image,
            [
                "mesh",
                "serve",
                name,
                "--listen",
                &app.to_string(),
                "--sidecar",
                &outbound.to_string(),
                "--data-dir",
                layout::DATA_DIR,
            ]
            .map(String::from)
            .to_vec(),
        ),
        (true, false) => bail!(
            "services.{name}: no command and not one of the shop's built-in apps, so a pod has nothing to run; \
             give it a command (and --app-image {name}=<image>)"
        ),
    };
    let container = json!({
        "name": name,
        "image": image,
        "command": command,
        "env": env,
        // No probes of its own: the app listens on 127.0.0.1 only, where a
        // kubelet cannot reach; the sidecar's /ready reports the app's
        // gRPC health, and the pod is ready only when the sidecar is.
        "resources": resources(layout::APP_RESOURCES),
        "securityContext": container_security(),
        "volumeMounts": [
            { "name": "data", "mountPath": layout::DATA_DIR },
            { "name": "tmp", "mountPath": "/tmp" },
        ],
    });
    let sidecar = sidecar_container(name, Some(service.inbound), service.admin, opts);
    let volumes = vec![
        config_volume(),
        secret_volume("certs", &layout::cert_secret(name)),
        json!({ "name": "data", "emptyDir": {} }),
        json!({ "name": "tmp", "emptyDir": {} }),
    ];
    Ok(deployment(name, service.replicas, sidecar, container, volumes, opts))
}

/// The sidecar as a native sidecar container (an init container that keeps
/// running). Its startup probe is `/live` (its listeners are up, so the app
/// may start and call out); readiness is `/ready`, which includes the app's
/// health, so the pod joins the headless Service only when both are.
fn sidecar_container(workload: &str, inbound: Option<SocketAddr>, admin: SocketAddr, opts: &Options<'_>) -> Value {
    let mut ports = vec![json!({ "name": "admin", "containerPort": admin.port() })];
    if let Some(inbound) = inbound {
        ports.insert(0, json!({ "name": "mesh", "containerPort": inbound.port() }));
    }
    // The sidecar alone mounts the certificate: the app never sees the key.
    let mounts = [
        config_mount(),
        json!({ "name": "certs", "mountPath": layout::CERTS_DIR, "readOnly": true }),
    ];
    json!({
        "name": PROXY_CONTAINER,
        "image": opts.image,
        "restartPolicy": "Always",
        "command": ["mesh", "proxy", "--config", layout::CONFIG_PATH, "--name", workload, "--replica", "0"],
        "ports": ports,
        "startupProbe": probe("/live", "admin", 1, 60),
        "readinessProbe": probe("/ready", "admin", 5, 2),
        "livenessProbe": probe("/live", "admin", 10, 3),
        "resources": resources(layout::PROXY_RESOURCES),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    })
}

fn deployment(name: &str, replicas: u16, sidecar: Value, app: Value, volumes: Vec<Value>, opts: &Options<'_>) -> Value {
    // Where a Prometheus that discovers pods scrapes: the sidecar's admin
    // port (deploy/prometheus.yml scrapes the same on one machine).
    let admin = sidecar["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == "admin"))
        .map(|p| p["containerPort"].to_string())
        .unwrap_or_default();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, name, opts),
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": selector(name) },
            // A new pod must be ready (in DNS) before an old one leaves.
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } },
            "template": {
                "metadata": {
                    "labels": labels(name),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": admin,
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": false,
                    // Time for the sidecar to drain after the app stopped.
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": layout::UID,
                        "runAsGroup": layout::UID,
                        // Lets the sidecar's user read its 0400 Secret files
                        // (the kubelet gives fsGroup read on them).
                        "fsGroup": layout::UID,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "initContainers": [sidecar],
                    "containers": [app],
                    "volumes": volumes,
                },
            },
        },
    })
}

fn probe(path: &str, port: &str, period: u32, failures: u32) -> Value {
    json!({
        "httpGet": { "path": path, "port": port },
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 1,
    })
}

fn resources((cpu_request, memory_request, cpu_limit, memory_limit): layout::Resources) -> Value {
    json!({
        "requests": { "cpu": cpu_request, "memory": memory_request },
        "limits": { "cpu": cpu_limit, "memory": memory_limit },
    })
}

fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
    })
}

fn config_volume() -> Value {
    json!({ "name": "config", "configMap": { "name": layout::CONFIG_MAP } })
}

fn config_mount() -> Value {
    json!({ "name": "config", "mountPath": layout::CONFIG_DIR, "readOnly": true })
}

/// A Secret's files, readable by their owner only.
fn secret_volume(volume: &str, secret: &str) -> Value {
    json!({ "name": volume, "secret": { "secretName": secret, "defaultMode": layout::SECRET_MODE } })
}
