//! Where the services' data lives in a cluster. Replicas on different
//! machines cannot share a SQLite file, so by default the manifests render a
//! PostgreSQL for the mesh (a StatefulSet with its own volume, behind a
//! headless Service) and every service's pods reach it by URL; or the
//! services use a database that exists already, its URL in a Secret; or,
//! for a single replica each, SQLite in the pod.
//!
//! The password is never in the manifests: the user creates the Secret
//! (`kubectl create secret generic postgres --from-literal=password=…`),
//! and each app builds its URL from it through Kubernetes' `$(VAR)`
//! expansion.

use anyhow::{Result, bail};
use meshwork_config::{MeshConfig, app_env};
use serde_json::{Value, json};

/// The `--database` choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A PostgreSQL StatefulSet rendered with the mesh.
    Postgres,
    /// An existing database: its URL is the `url` key of this Secret.
    Secret(String),
    /// SQLite in each pod's own folder: one replica per service only.
    Sqlite,
}

/// The rendered PostgreSQL's names: Service, StatefulSet, Secret, user and database.
pub const POSTGRES: &str = "postgres";
const PORT: u16 = 5432;
const USER: &str = "meshwork";
const IMAGE: &str = "docker.io/library/postgres:17";

impl std::str::FromStr for Database {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "postgres" => Ok(Database::Postgres),
            "sqlite" => Ok(Database::Sqlite),
            _ => match s.strip_prefix("secret:") {
                Some(name) if !name.is_empty() => Ok(Database::Secret(name.to_string())),
                _ => Err(format!("'{s}' is not postgres, sqlite or secret:<name>")),
            },
        }
    }
}

impl Database {
    /// Refuses SQLite for a service with several replicas: each pod would
    /// keep books of its own.
    pub fn check(&self, config: &MeshConfig) -> Result<()> {
        if *self == Database::Sqlite
            && let Some((name, _)) = config
                .services
                .iter()
                .find(|(_, s)| s.replicas > 1 && s.database.is_none())
        {
            bail!(
                "--database sqlite: services.{name} has several replicas, whose pods cannot share a SQLite file; \
                 use --database postgres (the default) or secret:<name>"
            );
        }
        Ok(())
    }

    /// The app container's environment for its database: the URL, built
    /// from the Secret where it holds the password. A service whose
    /// mesh.toml names a `database` keeps it.
    pub fn app_env(&self, service: &meshwork_config::Service, namespace: &str, cluster_domain: &str) -> Vec<Value> {
        if let Some(url) = &service.database {
            return vec![json!({ "name": app_env::DATABASE_URL, "value": url.as_str() })];
        }
        match self {
            Database::Sqlite => Vec::new(),
            Database::Secret(secret) => vec![json!({
                "name": app_env::DATABASE_URL,
                "valueFrom": { "secretKeyRef": { "name": secret, "key": "url" } },
            })],
            Database::Postgres => vec![
                json!({
                    "name": "POSTGRES_PASSWORD",
                    "valueFrom": { "secretKeyRef": { "name": POSTGRES, "key": "password" } },
                }),
                json!({
                    "name": app_env::DATABASE_URL,
                    "value": format!(
                        "postgres://{USER}:$(POSTGRES_PASSWORD)@{POSTGRES}.{namespace}.svc.{cluster_domain}:{PORT}/{USER}"
                    ),
                }),
            ],
        }
    }

    /// The objects this choice adds: for `Postgres`, its headless Service and StatefulSet.
    pub fn objects(&self, metadata: impl Fn(&str) -> Value, selector: Value, labels: Value) -> Vec<Value> {
        if *self != Database::Postgres {
            return Vec::new();
        }
        vec![
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata(POSTGRES),
                "spec": {
                    "clusterIP": "None",
                    "selector": selector,
                    "ports": [{ "name": "postgres", "port": PORT, "targetPort": "postgres", "protocol": "TCP" }],
                },
            }),
            json!({
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": metadata(POSTGRES),
                "spec": {
                    "serviceName": POSTGRES,
                    "replicas": 1,
                    "selector": { "matchLabels": selector },
                    "template": {
                        "metadata": { "labels": labels },
                        "spec": {
                            "automountServiceAccountToken": false,
                            // The image's postgres user.
                            "securityContext": {
                                "runAsNonRoot": true,
                                "runAsUser": 999,
                                "runAsGroup": 999,
                                "fsGroup": 999,
                                "seccompProfile": { "type": "RuntimeDefault" },
                            },
                            "containers": [{
                                "name": POSTGRES,
                                "image": IMAGE,
                                "ports": [{ "name": "postgres", "containerPort": PORT }],
                                "env": [
                                    { "name": "POSTGRES_USER", "value": USER },
                                    { "name": "POSTGRES_DB", "value": USER },
                                    {
                                        "name": "POSTGRES_PASSWORD",
                                        "valueFrom": { "secretKeyRef": { "name": POSTGRES, "key": "password" } },
                                    },
                                    { "name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata" },
                                ],
                                "readinessProbe": {
                                    "exec": { "command": ["pg_isready", "-U", USER, "-d", USER] },
                                    "periodSeconds": 5,
                                    "failureThreshold": 3,
                                    "timeoutSeconds": 2,
                                },
                                "livenessProbe": {
                                    "exec": { "command": ["pg_isready", "-U", USER, "-d", USER] },
                                    "periodSeconds": 10,
                                    "failureThreshold": 6,
                                    "timeoutSeconds": 2,
                                },
                                "resources": {
                                    "requests": { "cpu": "100m", "memory": "256Mi" },
                                    "limits": { "cpu": "2", "memory": "1Gi" },
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": false,
                                    "capabilities": { "drop": ["ALL"] },
                                },
                                "volumeMounts": [
                                    { "name": "data", "mountPath": "/var/lib/postgresql/data" },
                                    { "name": "run", "mountPath": "/var/run/postgresql" },
                                ],
                            }],
                            "volumes": [{ "name": "run", "emptyDir": {} }],
                        },
                    },
                    "volumeClaimTemplates": [{
                        "metadata": { "name": "data" },
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": { "requests": { "storage": "1Gi" } },
                        },
                    }],
                },
            }),
        ]
    }
}
