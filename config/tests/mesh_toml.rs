//! mesh.toml: the repository's example parses, and each kind of mistake is
//! refused with the key and a reason that says what is wrong.

use std::path::Path;

use meshwork_config::{ConfigError, MeshConfig};

const VALID: &str = r#"
trust_domain = "example.test"
[services.cart]
app = "127.0.0.1:1001"
inbound = "127.0.0.1:1002"
outbound = "127.0.0.1:1003"
admin = "127.0.0.1:1004"
grpc_services = ["shop.cart.v1.CartService"]
[services.payments]
app = "127.0.0.1:2001"
inbound = "127.0.0.1:2002"
outbound = "127.0.0.1:2003"
admin = "127.0.0.1:2004"
grpc_services = ["shop.payments.v1.PaymentService"]
allow = [{ from = "cart", methods = ["Charge", "shop.payments.v1.PaymentService/GetOrder"] }]
"#;

fn parse(text: &str) -> Result<MeshConfig, ConfigError> {
    MeshConfig::parse(text, Path::new("/etc/mesh/mesh.toml"))
}

/// Parses `text`, expects it refused, and returns (key, whole message).
fn refused(text: &str) -> (String, String) {
    let err = parse(text).expect_err("config should be refused");
    (err.key().to_string(), err.to_string())
}

#[test]
fn repository_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh.toml");
    let config = MeshConfig::load(&path).expect("the example mesh.toml is valid");
    assert_eq!(config.services.len(), 4);
    assert!(config.clients.contains_key("demo"));
    assert_eq!(
        config.service_serving("shop.catalog.v1.CatalogService").map(|(n, _)| n),
        Some("catalog")
    );
    assert_eq!(config.spiffe_id("cart"), "spiffe://meshwork.local/service/cart");
    let payments = &config.services["payments"];
    assert!(payments.permits("cart", "shop.payments.v1.PaymentService", "Charge"));
    assert!(!payments.permits("demo", "shop.payments.v1.PaymentService", "Charge"));
    assert!(!payments.permits("users", "shop.payments.v1.PaymentService", "GetOrder"));
}

#[test]
fn defaults_and_relative_state_dir() {
    let config = parse(VALID).expect("valid");
    assert_eq!(config.state_dir, Path::new("/etc/mesh/.mesh"));
    assert_eq!(config.leaf_lifetime.as_secs(), 24 * 3600);
    assert!(config.sidecar("cart").expect("cart sidecar").service.is_some());
    assert!(config.sidecar("nobody").is_none());
    // No `allow` key: any mesh identity may call.
    assert!(config.services["cart"].permits("anyone", "shop.cart.v1.CartService", "Checkout"));
    let payments = &config.services["payments"];
    assert!(payments.permits("cart", "shop.payments.v1.PaymentService", "GetOrder"));
    assert!(!payments.permits("cart", "shop.payments.v1.PaymentService", "Refund"));
}

#[test]
fn syntax_error_names_file_and_line() {
    let (_, message) = refused("trust_domain = \"a\"\n[services.cart\n");
    assert!(message.starts_with("/etc/mesh/mesh.toml: "), "{message}");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn unknown_key_is_refused_with_its_path() {
    let (key, message) = refused(&VALID.replace("admin = \"127.0.0.1:1004\"", "admn = \"127.0.0.1:1004\""));
    assert_eq!(key, "services.cart.admn", "{message}");
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn bad_address_is_refused_with_its_path() {
    let (key, message) = refused(&VALID.replace("127.0.0.1:1002", "localhost-ish"));
    assert_eq!(key, "services.cart.inbound", "{message}");
}

#[test]
fn missing_key_is_refused() {
    let (key, message) = refused(&VALID.replace("inbound = \"127.0.0.1:1002\"\n", ""));
    assert!(message.contains("missing field `inbound`"), "{message}");
    assert_eq!(key, "services.cart", "{message}");
}

#[test]
fn duplicate_address_names_both_keys() {
    let (key, message) = refused(&VALID.replace("127.0.0.1:2002", "127.0.0.1:1002"));
    assert_eq!(key, "services.payments.inbound");
    assert!(message.contains("already used by services.cart.inbound"), "{message}");
}

#[test]
fn app_must_stay_on_loopback() {
    let (key, message) = refused(&VALID.replace("127.0.0.1:1001", "0.0.0.0:1001"));
    assert_eq!(key, "services.cart.app");
    assert!(message.contains("loopback"), "{message}");
}

#[test]
fn unknown_caller_in_policy() {
    let (key, message) = refused(&VALID.replace("from = \"cart\"", "from = \"carts\""));
    assert_eq!(key, "services.payments.allow[0].from");
    assert!(message.contains("unknown workload 'carts'"), "{message}");
}

#[test]
fn policy_method_of_another_service() {
    let (key, message) = refused(&VALID.replace(
        "shop.payments.v1.PaymentService/GetOrder",
        "shop.cart.v1.CartService/Checkout",
    ));
    assert_eq!(key, "services.payments.allow[0].methods[1]", "{message}");
}

#[test]
fn grpc_service_served_twice() {
    let (key, message) = refused(&VALID.replace("shop.payments.v1.PaymentService\"]", "shop.cart.v1.CartService\"]"));
    assert_eq!(key, "services.payments.grpc_services[0]");
    assert!(message.contains("already served by services.cart"), "{message}");
}

#[test]
fn bad_trust_domain_and_names() {
    assert_eq!(
        refused(&VALID.replace("example.test", "Example Test")).0,
        "trust_domain"
    );
    assert_eq!(
        refused(&VALID.replace("[services.cart]", "[services.Cart]")).0,
        "services.Cart"
    );
    assert_eq!(
        refused(&format!("leaf_lifetime = \"1m\"\n{VALID}")).0,
        "leaf_lifetime",
        "a lifetime too short to renew is refused"
    );
}

#[test]
fn unreadable_file() {
    let err = MeshConfig::load(Path::new("/nonexistent/mesh.toml")).expect_err("missing file");
    assert!(
        err.to_string().starts_with("/nonexistent/mesh.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn replicas_get_shifted_ports_and_every_sidecar_is_listed() {
    let text = VALID.replace(
        "grpc_services = [\"shop.cart.v1.CartService\"]",
        "grpc_services = [\"shop.cart.v1.CartService\"]\nreplicas = 3",
    );
    let config = parse(&format!("replica_port_step = 10\n{text}")).expect("valid");
    let cart = &config.services["cart"];
    let replicas: Vec<_> = cart.replica_set(config.replica_port_step).collect();
    assert_eq!(replicas.len(), 3);
    assert_eq!(replicas[2].inbound.port(), 1022);
    assert_eq!(replicas[1].app.port(), 1011);
    let spec = config.sidecar_replica("cart", 2).expect("replica 2");
    assert_eq!(spec.admin.port(), 1024);
    assert_eq!(spec.inbound.map(|a| a.port()), Some(1022));
    assert!(config.sidecar_replica("cart", 3).is_none());
    assert_eq!(config.sidecars().count(), 4, "three cart replicas and one payments");
}

#[test]
fn replica_ports_that_collide_are_refused() {
    // cart's replica 1 would take payments' app port 2001.
    let text = VALID.replace(
        "grpc_services = [\"shop.cart.v1.CartService\"]",
        "grpc_services = [\"shop.cart.v1.CartService\"]\nreplicas = 2",
    );
    let (key, message) = refused(&text);
    assert_eq!(key, "services.payments.app", "{message}");
    assert!(
        message.contains("already used by services.cart.app (replica 1)"),
        "{message}"
    );
    let (key, _) = refused(&format!("replica_port_step = 65000\n{text}"));
    assert_eq!(key, "services.cart.replicas");
}

#[test]
fn traffic_policy_parses_and_resolves_per_method() {
    let text = format!(
        "{VALID}{}",
        r#"
timeout = "2s"
retry_on = ["RESOURCE_EXHAUSTED"]
[services.payments.methods.Charge]
timeout = "500ms"
[services.payments.methods."shop.payments.v1.PaymentService/Refund"]
idempotent = false
[[services.payments.faults]]
methods = ["Charge"]
abort = { percent = 100, status = "UNAVAILABLE", after_response = true }
[[services.payments.faults]]
delay = { percent = 50, duration = "1s" }
"#
    );
    let config = parse(&text).expect("valid");
    let payments = &config.services["payments"];
    let svc = "shop.payments.v1.PaymentService";
    assert_eq!(payments.timeout, Some(std::time::Duration::from_secs(2)));
    assert_eq!(payments.retry_on, vec![meshwork_config::GrpcCode::ResourceExhausted]);
    assert_eq!(
        payments.method_policy(svc, "Charge").and_then(|p| p.timeout),
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(
        payments.method_policy(svc, "Refund").and_then(|p| p.idempotent),
        Some(false)
    );
    assert!(payments.method_policy(svc, "GetOrder").is_none());
    assert_eq!(payments.faults_for(svc, "Charge").count(), 2);
    assert_eq!(payments.faults_for(svc, "GetOrder").count(), 1);
    assert_eq!(config.retry.max_replay_bytes, 64 * 1024, "defaults apply");
}

#[test]
fn bad_traffic_policy_is_refused() {
    let with = |extra: &str| refused(&format!("{VALID}{extra}"));
    let (key, message) = with("[[services.payments.faults]]\nabort = { percent = 150, status = \"UNAVAILABLE\" }\n");
    assert_eq!(key, "services.payments.faults[0].abort.percent", "{message}");
    let (key, message) = with("[[services.payments.faults]]\nabort = { percent = 10, status = \"BROKEN\" }\n");
    assert!(key.starts_with("services.payments.faults[0].abort"), "{key}: {message}");
    assert!(message.contains("unknown variant `BROKEN`"), "{message}");
    let (key, _) = with("[[services.payments.faults]]\nmethods = [\"Charge\"]\n");
    assert_eq!(key, "services.payments.faults[0]");
    let (key, _) = with("[services.payments.methods.\"x.Y/Charge\"]\nidempotent = true\n");
    assert_eq!(key, "services.payments.methods.\"x.Y/Charge\"");
    let (key, _) = with("[retry]\nbudget_ratio = 2.0\n");
    assert_eq!(key, "retry.budget_ratio");
}

#[test]
fn a_loaded_config_remembers_the_version_it_was_read_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.toml");
    std::fs::write(&path, VALID).expect("write");
    let config = MeshConfig::load(&path).expect("valid");
    assert!(config.source_stamp.is_known());
    assert_eq!(config.source_stamp, meshwork_config::FileStamp::of(&path));
    // An edit (here one that changes the length) is a new version.
    std::fs::write(&path, format!("{VALID}\n# edited\n")).expect("edit");
    assert_ne!(config.source_stamp, meshwork_config::FileStamp::of(&path));
    // Text parsed without a file has no version to compare with.
    assert!(!parse(VALID).expect("valid").source_stamp.is_known());
}

#[test]
fn restart_policy_defaults_to_always_and_a_bad_one_is_refused() {
    let config = parse(VALID).expect("valid");
    assert_eq!(config.services["payments"].restart, meshwork_config::Restart::Always);
    let with = |value: &str| {
        VALID.replace(
            "[services.payments]\n",
            &format!("[services.payments]\nrestart = \"{value}\"\n"),
        )
    };
    let config = parse(&with("on-failure")).expect("on-failure");
    assert_eq!(config.services["payments"].restart, meshwork_config::Restart::OnFailure);
    let (key, message) = refused(&with("sometimes"));
    assert_eq!(key, "services.payments.restart", "{message}");
    assert!(message.contains("unknown variant `sometimes`"), "{message}");
}

#[test]
fn a_database_url_is_checked_and_never_quoted() {
    assert_eq!(parse(VALID).expect("valid").services["payments"].database, None);
    let with = |value: &str| {
        VALID.replace(
            "[services.payments]\n",
            &format!("[services.payments]\ndatabase = \"{value}\"\n"),
        )
    };
    let url = "postgres://shop:s3cret@db.shop.svc:5432/payments?sslmode=require";
    let config = parse(&with(url)).expect("a PostgreSQL URL");
    let database = config.services["payments"].database.as_ref().expect("database");
    assert_eq!(database.as_str(), url);
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "a printed config shows no password"
    );
    for (bad, reason) in [
        (
            "mysql://shop:s3cret@db:3306/payments",
            "'mysql' is not a database Meshwork speaks",
        ),
        ("postgres://shop:s3cret@db:port/payments", "port 'port' is not a number"),
        ("db.shop.svc/payments", "not a URL"),
    ] {
        let (key, message) = refused(&with(bad));
        assert_eq!(key, "services.payments.database", "{message}");
        assert!(
            message.starts_with("/etc/mesh/mesh.toml: services.payments.database: "),
            "{message}"
        );
        assert!(message.contains(reason), "{bad}: {message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
}

/// The polyglot example repeats the shop's services: they must stay the
/// repository's, so the example never runs an older shop.
#[test]
fn the_polyglot_example_runs_the_repositorys_shop() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shop = MeshConfig::load(&root.join("mesh.toml")).expect("mesh.toml");
    let polyglot = MeshConfig::load(&root.join("examples/polyglot/mesh.toml")).expect("the example's mesh.toml");
    for (name, service) in &shop.services {
        let theirs = polyglot
            .services
            .get(name)
            .unwrap_or_else(|| panic!("the example lacks {name}"));
        let mut ours = service.clone();
        // Each file's apps start in its own folder.
        ours.workdir = theirs.workdir.clone();
        // The example may let its own services call the shop's.
        ours.allow = theirs
            .allow
            .clone()
            .filter(|rules| service.allow.iter().flatten().all(|rule| rules.contains(rule)));
        assert_eq!(&ours, theirs, "services.{name} differs from the repository's mesh.toml");
    }
    assert_eq!(shop.clients, polyglot.clients);
    // The example's gateway is the shop's, with its own service's reads public too.
    let mut theirs = polyglot.gateway.clone().expect("the example's gateway");
    theirs.auth.public.retain(|m| !m.starts_with("reviews."));
    assert_eq!(shop.gateway, Some(theirs));
}
