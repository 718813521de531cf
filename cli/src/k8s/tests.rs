//! The shape of the shop's manifests: what the Kubernetes API schemas
//! cannot check (tests/e2e/k8s_manifests.rs validates them against those).

use std::{collections::BTreeMap, path::Path};

use meshwork_config::MeshConfig;
use serde_json::Value;

use super::{database::Database, layout, parse_stream, render, stream};

fn shop() -> (MeshConfig, Vec<Value>) {
    rendered("mesh.toml", &BTreeMap::new())
}

/// The repository's mesh.toml at `file`, rendered for the namespace `shop`
/// and read back.
fn rendered(file: &str, app_images: &BTreeMap<String, String>) -> (MeshConfig, Vec<Value>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let config = MeshConfig::parse(&text, &path).expect("valid");
    let docs = render(
        &config,
        &text,
        "shop",
        "mesh:test",
        app_images,
        "cluster.local",
        &Database::Postgres,
    )
    .expect("renders");
    let objects = parse_stream(&stream(&docs));
    assert_eq!(objects.len(), docs.len(), "every document reads back");
    (config, objects)
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter(move |o| o["kind"] == kind)
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

#[test]
fn every_app_waits_for_its_native_sidecar() {
    let (config, objects) = shop();
    let deployments: Vec<_> = of_kind(&objects, "Deployment").collect();
    assert_eq!(
        deployments.len(),
        config.services.len() + 1,
        "a Deployment per service and the gateway"
    );
    for d in deployments {
        let name = d["metadata"]["name"].as_str().expect("name");
        let pod = &d["spec"]["template"]["spec"];
        let annotations = &d["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
        let init = items(&pod["initContainers"]);
        assert_eq!(init.len(), 1, "{name}: one init container, the sidecar");
        let sidecar = &init[0];
        assert_eq!(sidecar["name"], layout::PROXY_CONTAINER);
        // A native sidecar: kept running, and the app starts once its
        // startup probe passes.
        assert_eq!(sidecar["restartPolicy"], "Always", "{name}");
        assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/live", "{name}");
        assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/ready", "{name}");
        assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/live", "{name}");
        let command: Vec<_> = items(&sidecar["command"]).iter().filter_map(Value::as_str).collect();
        assert_eq!(
            command,
            [
                "mesh",
                "proxy",
                "--config",
                layout::CONFIG_PATH,
                "--name",
                name,
                "--replica",
                "0"
            ]
        );
        for c in items(&pod["containers"]).iter().chain(init) {
            assert!(
                c["resources"]["requests"]["memory"].is_string(),
                "{name}/{}: requests",
                c["name"]
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{name}/{}: limits",
                c["name"]
            );
        }
        if let Some(service) = config.services.get(name) {
            assert_eq!(
                d["spec"]["replicas"], service.replicas,
                "{name}: replicas from mesh.toml"
            );
        }
    }
}

#[test]
fn no_app_listens_outside_loopback() {
    let (config, objects) = shop();
    for d in of_kind(&objects, "Deployment") {
        let name = d["metadata"]["name"].as_str().expect("name");
        if name == meshwork_config::GATEWAY_WORKLOAD {
            continue; // The edge: public by design, behind its LoadBalancer.
        }
        let app = &items(&d["spec"]["template"]["spec"]["containers"])[0];
        assert!(app["ports"].is_null(), "{name}: the app exposes no port");
        let command: Vec<_> = items(&app["command"]).iter().filter_map(Value::as_str).collect();
        let listen = command
            .iter()
            .position(|a| *a == "--listen")
            .map(|i| command[i + 1])
            .expect("--listen");
        let listen: std::net::SocketAddr = listen.parse().expect("address");
        assert!(listen.ip().is_loopback(), "{name} listens on {listen}");
        let env = items(&app["env"]);
        let var = |k: &str| env.iter().find(|e| e["name"] == k).and_then(|e| e["value"].as_str());
        assert_eq!(var("MESH_LISTEN"), Some(listen.to_string().as_str()));
        assert!(config.services[name].app.ip().is_loopback());
    }
    // And in the mesh.toml pods read: apps and outbound on loopback,
    // inbound on the pod's address, endpoints the headless names.
    let map = of_kind(&objects, "ConfigMap").next().expect("ConfigMap");
    let text = map["data"]["mesh.toml"].as_str().expect("mesh.toml");
    let pods = MeshConfig::parse(text, Path::new(layout::CONFIG_PATH)).expect("valid for pods");
    for (name, s) in &pods.services {
        assert!(s.app.ip().is_loopback() && s.outbound.ip().is_loopback(), "{name}");
        assert!(s.inbound.ip().is_unspecified(), "{name}: inbound on the pod's address");
        let endpoints = s.endpoints.as_ref().expect("endpoints").to_string();
        assert_eq!(endpoints, format!("{name}.shop.svc.cluster.local:{}", s.inbound.port()));
        let svc = of_kind(&objects, "Service")
            .find(|o| o["metadata"]["name"] == name.as_str())
            .expect("its Service");
        assert_eq!(svc["spec"]["clusterIP"], "None", "{name}: headless");
        assert_eq!(svc["spec"]["ports"][0]["port"], s.inbound.port());
    }
    assert_eq!(pods.state_dir, Path::new(layout::STATE_DIR));
    let gateway = of_kind(&objects, "Service")
        .find(|o| o["metadata"]["name"] == "gateway")
        .expect("the gateway's Service");
    assert_eq!(gateway["spec"]["type"], "LoadBalancer");
}

#[test]
fn every_secret_is_mounted_read_only_with_mode_0400_by_the_sidecar_alone() {
    let (_, objects) = shop();
    let mut seen = 0;
    for d in of_kind(&objects, "Deployment") {
        let name = d["metadata"]["name"].as_str().expect("name");
        let pod = &d["spec"]["template"]["spec"];
        let secrets: Vec<&str> = items(&pod["volumes"])
            .iter()
            .filter(|v| v["secret"].is_object())
            .map(|v| {
                assert_eq!(v["secret"]["defaultMode"], 0o400, "{name}: {v}");
                v["name"].as_str().expect("volume name")
            })
            .collect();
        assert!(
            items(&pod["volumes"])
                .iter()
                .any(|v| v["secret"]["secretName"] == layout::cert_secret(name)),
            "{name}: its certificate"
        );
        let containers = items(&pod["containers"]).iter().chain(items(&pod["initContainers"]));
        for c in containers {
            for m in items(&c["volumeMounts"]) {
                if secrets.contains(&m["name"].as_str().unwrap_or_default()) {
                    assert_eq!(m["readOnly"], true, "{name}/{}: {m}", c["name"]);
                    assert_eq!(
                        c["name"],
                        layout::PROXY_CONTAINER,
                        "{name}: only the sidecar holds the key"
                    );
                    seen += 1;
                }
            }
        }
    }
    assert_eq!(seen, 5, "four services and the gateway mount a certificate");
}

#[test]
fn the_rendered_example_in_deploy_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("mesh.toml")).expect("mesh.toml");
    // As `mesh k8s --config mesh.toml -n shop > deploy/k8s/shop.yaml` renders it.
    let config = MeshConfig::parse(&text, Path::new("mesh.toml")).expect("valid");
    let image = concat!("meshwork/mesh:", env!("CARGO_PKG_VERSION"));
    let docs = render(
        &config,
        &text,
        "shop",
        image,
        &BTreeMap::new(),
        "cluster.local",
        &Database::Postgres,
    )
    .expect("renders");
    let committed = std::fs::read_to_string(root.join("deploy/k8s/shop.yaml")).expect("deploy/k8s/shop.yaml");
    assert!(
        stream(&docs) == committed,
        "deploy/k8s/shop.yaml is stale: run `mesh k8s --config mesh.toml -n shop > deploy/k8s/shop.yaml`"
    );
}

#[test]
fn what_a_pod_cannot_run_is_refused_with_the_reason() {
    let (config, _) = shop();
    let text = std::fs::read_to_string(&config.source).expect("mesh.toml");
    let err = render(
        &config,
        &text,
        "Shop",
        "mesh:test",
        &BTreeMap::new(),
        "cluster.local",
        &Database::Postgres,
    )
    .expect_err("bad namespace");
    assert!(
        err.to_string().starts_with("--namespace 'Shop' is not a DNS label"),
        "{err}"
    );
    let images = BTreeMap::from([("reviews".to_string(), "reviews:1".to_string())]);
    let err = render(
        &config,
        &text,
        "shop",
        "mesh:test",
        &images,
        "cluster.local",
        &Database::Postgres,
    )
    .expect_err("unknown service");
    assert_eq!(
        err.to_string(),
        "--app-image reviews=...: mesh.toml has no service 'reviews'"
    );

    // A service whose app someone else starts has nothing to run in a pod.
    let external = format!(
        "{text}\n[services.reviews]\napp = \"127.0.0.1:7105\"\ninbound = \"127.0.0.1:7205\"\n\
         outbound = \"127.0.0.1:7305\"\nadmin = \"127.0.0.1:7405\"\ngrpc_services = [\"shop.reviews.v1.ReviewService\"]\n"
    );
    let config = MeshConfig::parse(&external, &config.source).expect("valid");
    let err = render(
        &config,
        &external,
        "shop",
        "mesh:test",
        &BTreeMap::new(),
        "cluster.local",
        &Database::Postgres,
    )
    .expect_err("no app");
    assert!(
        err.to_string()
            .starts_with("services.reviews: no command and not one of the shop's built-in apps"),
        "{err}"
    );
}

/// The database in a cluster: a rendered PostgreSQL by default, every app
/// reaching it by a URL whose password comes from a Secret (never the
/// manifests); an existing one from a Secret; SQLite only where a service has
/// one replica.
#[test]
fn the_services_share_a_database_that_outlives_pods() {
    let (config, objects) = shop();
    let statefulset = of_kind(&objects, "StatefulSet")
        .next()
        .expect("a PostgreSQL StatefulSet");
    assert_eq!(statefulset["metadata"]["name"], "postgres");
    assert!(
        statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"].is_string(),
        "its data on a volume of its own"
    );
    let password = &statefulset["spec"]["template"]["spec"]["containers"][0]["env"][2];
    assert_eq!(password["valueFrom"]["secretKeyRef"]["name"], "postgres");
    assert!(
        of_kind(&objects, "Service").any(|s| s["metadata"]["name"] == "postgres" && s["spec"]["clusterIP"] == "None")
    );
    for d in of_kind(&objects, "Deployment").filter(|d| {
        config
            .services
            .contains_key(d["metadata"]["name"].as_str().unwrap_or(""))
    }) {
        let env = items(&d["spec"]["template"]["spec"]["containers"][0]["env"]);
        let url = env
            .iter()
            .find(|e| e["name"] == "MESH_DATABASE_URL")
            .expect("a database URL");
        assert_eq!(
            url["value"],
            "postgres://meshwork:$(POSTGRES_PASSWORD)@postgres.shop.svc.cluster.local:5432/meshwork"
        );
        let at = |name: &str| env.iter().position(|e| e["name"] == name);
        assert!(
            at("POSTGRES_PASSWORD") < at("MESH_DATABASE_URL"),
            "defined before it is used"
        );
    }
    assert!(
        !stream_of(&config, &Database::Postgres).contains("password="),
        "no password in the manifests"
    );

    let existing = stream_of(&config, &Database::Secret("shop-db".into()));
    assert!(!existing.contains("kind: StatefulSet"));
    assert!(
        existing.contains("name: shop-db") && existing.contains("key: url"),
        "{existing}"
    );

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh.toml");
    let text = std::fs::read_to_string(&path).expect("mesh.toml");
    let replicated = text.replace("[services.cart]\n", "[services.cart]\nreplicas = 2\n");
    let replicated = MeshConfig::parse(&replicated, &path).expect("valid");
    let err = render(
        &replicated,
        &text,
        "shop",
        "mesh:test",
        &BTreeMap::new(),
        "cluster.local",
        &Database::Sqlite,
    )
    .expect_err("replicas cannot share SQLite");
    assert!(
        err.to_string()
            .starts_with("--database sqlite: services.cart has several replicas"),
        "{err}"
    );
    assert!("secret:".parse::<Database>().is_err());
    assert_eq!("secret:db".parse::<Database>(), Ok(Database::Secret("db".into())));
}

fn stream_of(config: &MeshConfig, database: &Database) -> String {
    let text = std::fs::read_to_string(&config.source).expect("mesh.toml");
    stream(
        &render(
            config,
            &text,
            "shop",
            "mesh:test",
            &BTreeMap::new(),
            "cluster.local",
            database,
        )
        .expect("renders"),
    )
}

/// Gateway replicas sharing rate limits through a local Redis on one machine
/// share the Redis rendered beside them in a cluster.
#[test]
fn gateway_replicas_share_the_redis_rendered_for_them() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh.toml");
    let text = std::fs::read_to_string(&path).expect("mesh.toml") + "\n[gateway.rate_limit_store]\nredis = \"local\"\n";
    let text = text.replace("[gateway]\n", "[gateway]\nreplicas = 2\n");
    let config = MeshConfig::parse(&text, &path).expect("valid");
    let docs = render(
        &config,
        &text,
        "shop",
        "mesh:test",
        &BTreeMap::new(),
        "cluster.local",
        &Database::Postgres,
    )
    .expect("renders");
    let objects = parse_stream(&stream(&docs));
    let named = |kind: &str, name: &str| {
        of_kind(&objects, kind)
            .find(|o| o["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    assert_eq!(named("Deployment", "gateway")["spec"]["replicas"], 2);
    let redis = named("Deployment", "redis");
    assert_eq!(redis["spec"]["template"]["spec"]["containers"][0]["args"][0], "--save");
    named("Service", "redis");
    let pods = named("ConfigMap", "mesh")["data"]["mesh.toml"]
        .as_str()
        .expect("mesh.toml")
        .to_string();
    assert!(
        pods.contains("redis = \"redis://redis.shop.svc.cluster.local:6379\""),
        "{pods}"
    );
    assert!(!pods.contains("local_port"), "{pods}");
}

/// A service whose contracts are `.proto` files (the polyglot example's
/// reviews, with imports from two include folders): the pods get them
/// compiled, in the ConfigMap beside their mesh.toml, and that folder alone
/// gives the registry every method with its idempotency and REST route, as
/// on one machine.
#[test]
fn contract_files_travel_to_pods_in_the_config_map() {
    let images = BTreeMap::from([("reviews".to_string(), "reviews:1".to_string())]);
    let (_, objects) = rendered("examples/polyglot/mesh.toml", &images);
    let map = of_kind(&objects, "ConfigMap")
        .find(|o| o["metadata"]["name"] == layout::CONFIG_MAP)
        .expect("the mesh ConfigMap");
    let binary = map["binaryData"].as_object().expect("binaryData");
    assert_eq!(
        binary.keys().collect::<Vec<_>>(),
        ["contracts-reviews.pb"],
        "only reviews names contract files"
    );

    // The ConfigMap as a pod mounts it: one folder with its keys as files.
    let mounted = tempfile::tempdir().expect("tempdir");
    let pod_toml = map["data"][layout::CONFIG_FILE].as_str().expect("mesh.toml");
    assert!(
        pod_toml.contains("descriptor_sets = [\"contracts-reviews.pb\"]"),
        "{pod_toml}"
    );
    std::fs::write(mounted.path().join(layout::CONFIG_FILE), pod_toml).expect("write");
    for (file, encoded) in binary {
        use base64::Engine;
        let bytes = base64::prelude::BASE64_STANDARD
            .decode(encoded.as_str().expect("base64 text"))
            .expect("base64");
        std::fs::write(mounted.path().join(file), bytes).expect("write");
    }
    let mesh = meshwork_contracts::Mesh::load(&mounted.path().join(layout::CONFIG_FILE))
        .unwrap_or_else(|e| panic!("a pod's sidecar would refuse its ConfigMap: {e}"));
    let method = |name: &str| {
        mesh.registry
            .method(&format!("/reviews.v1.ReviewService/{name}"))
            .unwrap_or_else(|| panic!("{name} missing from the pod's registry"))
    };
    assert_eq!(
        method("ListReviews").idempotency,
        meshwork_contracts::Idempotency::NoSideEffects
    );
    assert_eq!(
        method("AddReview").idempotency,
        meshwork_contracts::Idempotency::Idempotent
    );
    // The REST rule is an extension option: it survives only if the set
    // was encoded with its extensions.
    let descriptor = &method("GetRating").descriptor;
    let http = descriptor
        .parent_pool()
        .get_extension_by_name("google.api.http")
        .expect("google/api/annotations.proto among the pod's contracts");
    let options = descriptor.options();
    assert!(options.has_extension(&http), "GetRating lost its REST rule");
    let rule = format!("{:?}", options.get_extension(&http));
    assert!(rule.contains("/v1/products/{product_id}/rating"), "{rule}");
}
