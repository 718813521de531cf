//! Services of one's own, meshed from their contracts: allow rules and
//! contracts followed while running on both sides of the sidecars, a method
//! typo refused at start, and the polyglot example's Python service started
//! by `mesh up`, named in metrics and traced with the Rust services.

use std::{path::Path, time::Duration};

use nix::sys::signal::Signal;
use prost::Message;
use tonic::Code;

use crate::support::{
    http,
    mesh_process::MeshProcess,
    otlp::Collector,
    replicas::{Fail, Policy, ReplicaMesh, echo},
};

/// Calls `Unary` until `done` says the outcome is the one awaited, or
/// panics after 10 s: a reload is a poll away, not a fixed sleep.
async fn until<T>(
    mesh: &ReplicaMesh,
    mut attempt: impl FnMut() -> Option<Fail>,
    mut done: impl FnMut(&Result<tonic::Response<meshwork_proto::echo::EchoResponse>, tonic::Status>) -> Option<T>,
) -> T {
    let mut client = mesh.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(fail) = attempt() {
            mesh.script.fail_next(fail);
        }
        let outcome = client.unary(echo(16)).await;
        if let Some(value) = done(&outcome) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw the edit take effect: last {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_edit_holds_on_connections_already_open() {
    let only_streams = r#"allow = [{ from = "caller", methods = ["ServerStream"] }]"#;
    let mut mesh = ReplicaMesh::start(
        1,
        Policy {
            service_keys: only_streams.into(),
            ..Policy::default()
        },
    )
    .await;
    let mut client = mesh.client().await;
    let denied = client.unary(echo(16)).await.expect_err("Unary is not allowed");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let inbound = r#"meshwork_open_connections{direction="inbound"}"#;
    let open_before = metric(mesh.ports(0).admin, inbound).await;
    assert!(open_before >= 1.0, "the caller's sidecar holds its connections open");

    mesh.set_policy(Policy {
        service_keys: r#"allow = [{ from = "caller", methods = ["Unary"] }]"#.into(),
        ..Policy::default()
    });
    mesh.write_config(1);
    until(&mesh, || None, |outcome| outcome.is_ok().then_some(())).await;
    // The connections that carried the denied call carried the allowed one:
    // nothing was closed or reopened to apply the edit.
    assert_eq!(metric(mesh.ports(0).admin, inbound).await, open_before);
    mesh.shutdown().await;
}

/// The echo contract with `Unary`'s idempotency as given, encoded as
/// `protoc --descriptor_set_out` writes it.
fn echo_descriptors(path: &Path, unary_idempotency: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let text = std::fs::read_to_string(repo.join("meshwork/echo/v1/echo.proto")).expect("echo.proto");
    let dir = path.parent().expect("dir").join("protos");
    std::fs::create_dir_all(dir.join("meshwork/echo/v1")).expect("mkdir");
    let marked = text.replacen(
        "rpc Unary(EchoRequest) returns (EchoResponse);",
        &format!("rpc Unary(EchoRequest) returns (EchoResponse) {{ option idempotency_level = {unary_idempotency}; }}"),
        1,
    );
    assert_ne!(marked, text, "echo.proto's Unary line moved");
    std::fs::write(dir.join("meshwork/echo/v1/echo.proto"), marked).expect("write proto");
    let set = protox::compile(["meshwork/echo/v1/echo.proto"], [&dir]).expect("compiles");
    // Write then rename, as build tools replace their outputs.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, set.encode_to_vec()).expect("write descriptors");
    std::fs::rename(&partial, path).expect("rename descriptors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_file_edited_while_running_changes_what_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let descriptors = dir.path().join("echo.pb");
    echo_descriptors(&descriptors, "IDEMPOTENCY_UNKNOWN");
    let keys = format!("contracts = {{ descriptor_sets = ['{}'] }}", descriptors.display());
    let mesh = ReplicaMesh::start(
        1,
        Policy {
            service_keys: keys,
            ..Policy::default()
        },
    )
    .await;
    let mut client = mesh.client().await;
    mesh.script.fail_next(Fail::InHeaders);
    let status = client.unary(echo(16)).await.expect_err("not idempotent: not retried");
    assert_eq!(status.code(), Code::Unavailable);

    echo_descriptors(&descriptors, "IDEMPOTENT");
    // Each attempt fails once; once the edit is in, the retry answers.
    until(&mesh, || Some(Fail::InHeaders), |outcome| outcome.is_ok().then_some(())).await;
    let retried = metric(
        mesh.caller_admin,
        r#"meshwork_outbound_retries_total{destination="echo"}"#,
    )
    .await;
    assert!(retried >= 1.0, "retries: {retried}");
    mesh.shutdown().await;
}

async fn metric(admin: std::net::SocketAddr, series: &str) -> f64 {
    let (_, body) = http::get(admin, "/metrics").await.expect("metrics");
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The polyglot example's mesh.toml on ports from `base`, with its paths
/// made absolute (the file is written to `dir`), and `extra` appended.
fn polyglot_config(dir: &Path, base: u16, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/polyglot");
    let text = std::fs::read_to_string(example.join("mesh.toml")).expect("the example's mesh.toml");
    let mut moved = text
        .replace(
            "workdir = \"reviews\"",
            &format!("workdir = '{}'", example.join("reviews").display()),
        )
        .replace(
            "include = [\"proto\", \"../../proto\"]",
            &format!(
                "include = ['{}', '{}']",
                example.join("proto").display(),
                example.join("../../proto").display()
            ),
        )
        // The gateway's public port (8080) moves to base + 80, as in shop_config.
        .replace("127.0.0.1:8080\"", &format!("127.0.0.1:{}\"", base + 80));
    for port in (7100..7406).rev() {
        moved = moved.replace(
            &format!("127.0.0.1:{port}\""),
            &format!("127.0.0.1:{}\"", port - 7100 + base),
        );
    }
    let path = dir.join("mesh.toml");
    std::fs::write(&path, edit(moved)).expect("write mesh.toml");
    path
}

/// The virtual environment `scripts/test` installs the example's packages in.
fn venv_path() -> String {
    let venv = std::env::var("MESHWORK_VENV").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/venv")
            .display()
            .to_string()
    });
    let bin = Path::new(&venv).join("bin");
    assert!(
        bin.join("python3").is_file(),
        "no Python environment at {venv}: run the tests with scripts/test, which installs it"
    );
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

#[test]
fn the_python_service_is_meshed_named_in_metrics_and_traced_with_the_shop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = polyglot_config(dir.path(), 24100, |text| text);
    let collector = Collector::start();
    let path = venv_path();
    let mut mesh = MeshProcess::start_with_env(
        &["up", "--demo", "--config", config.to_str().expect("utf-8")],
        &[
            ("PATH", &path),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    let line = mesh.wait_for("demo: 10. reviewed", Duration::from_secs(120));
    assert!(line.contains(r#""count":1"#), "{line}");
    mesh.wait_for("mesh: up", Duration::from_secs(30));
    let product = line
        .strip_prefix("demo: 10. reviewed ")
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the reviewed product")
        .to_string();

    // Its methods are named, from its .proto, on its sidecar and its callers'.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reviews_admin: std::net::SocketAddr = "127.0.0.1:24405".parse().expect("addr");
    let (_, metrics) = runtime.block_on(http::get(reviews_admin, "/metrics")).expect("metrics");
    for method in [
        "reviews.v1.ReviewService/AddReview",
        "reviews.v1.ReviewService/GetRating",
    ] {
        assert!(
            metrics.contains(&format!(
                r#"meshwork_requests_total{{direction="inbound",peer="demo",method="{method}"}} 1"#
            )),
            "{method} not counted:\n{metrics}"
        );
    }
    assert!(!metrics.contains(r#"method="unknown""#), "{metrics}");

    // Its REST routes come from its own contract's google.api.http rules,
    // with no code: the gateway publishes them as it does the shop's.
    let gateway: std::net::SocketAddr = "127.0.0.1:24180".parse().expect("addr");
    let (status, rating) = runtime
        .block_on(http::get(gateway, &format!("/v1/products/{product}/rating")))
        .expect("GET the rating over REST");
    assert_eq!(status, 200, "{rating}");
    let rating: serde_json::Value = serde_json::from_str(&rating).expect("JSON");
    assert_eq!(rating["count"], 1, "{rating}");
    assert_eq!(rating["productId"], product.as_str(), "{rating}");
    let (status, reviews) = runtime
        .block_on(http::get(gateway, &format!("/v1/products/{product}/reviews")))
        .expect("GET the reviews over REST");
    assert_eq!(status, 200, "{reviews}");
    assert!(reviews.contains(r#""stars":"#), "{reviews}");

    // One trace: the demo's sidecar, reviews' sidecar, the Python app, its
    // call to catalog through its own sidecar, and the catalog app.
    collector.wait_until(Duration::from_secs(30), |spans| {
        let add = spans
            .iter()
            .find(|s| s.service == "reviews" && s.name.ends_with("AddReview"))
            .ok_or("no span of the Python service")?;
        let in_trace: Vec<&str> = spans
            .iter()
            .filter(|s| s.trace_id == add.trace_id)
            .map(|s| s.service.as_str())
            .collect();
        for service in ["demo-proxy", "reviews-proxy", "reviews", "catalog-proxy", "catalog"] {
            if !in_trace.contains(&service) {
                return Err(format!("{service} is not in the AddReview trace: {in_trace:?}"));
            }
        }
        Ok(())
    });
    mesh.signal(Signal::SIGTERM);
    let status = mesh.wait(Duration::from_secs(40));
    assert!(status.success(), "mesh up ended with {status}:\n{}", mesh.output());
}

#[test]
fn a_method_typo_is_refused_at_start_with_the_closest_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = polyglot_config(dir.path(), 25100, |text| {
        text + r#"
[[services.reviews.faults]]
methods = ["AddReview", "ListReveiws"]
abort = { percent = 10, status = "UNAVAILABLE" }
"#
    });
    let mut mesh = MeshProcess::start_with_env(&["up", "--config", config.to_str().expect("utf-8")], &[]);
    let status = mesh.wait(Duration::from_secs(30));
    assert!(!status.success());
    let output = mesh.output();
    assert!(
        output.contains(&format!(
            "{}: services.reviews.faults[0].methods[1]: no method 'ListReveiws' in reviews.v1.ReviewService; \
             did you mean 'ListReviews'?",
            config.display()
        )),
        "{output}"
    );
}

/// A service with no command is started by someone else: `mesh up` starts
/// its sidecar, says what it waits for, and is up once the app is. Its
/// contracts come from its reflection (grpcio serves v1alpha), which the
/// sidecars read through the mesh once it answers.
#[test]
fn an_app_without_a_command_is_waited_for_and_its_reflection_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = polyglot_config(dir.path(), 26100, |text| {
        let protos = text
            .lines()
            .find(|l| l.starts_with("contracts = { protos"))
            .expect("contracts line");
        text.replace(protos, "contracts = { reflection = true }")
            .replace("command = [\"python3\", \"-u\", \"server.py\"]\n", "")
    });
    let path = venv_path();
    let mut mesh =
        MeshProcess::start_with_env(&["up", "--config", config.to_str().expect("utf-8")], &[("PATH", &path)]);
    mesh.wait_for(
        "mesh: waiting for reviews's app at 127.0.0.1:26105",
        Duration::from_secs(60),
    );
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/polyglot/reviews/server.py");
    let app = KillOnDrop(
        std::process::Command::new("python3")
            .arg(&server)
            .env("PATH", &path)
            .env("MESH_LISTEN", "127.0.0.1:26105")
            .env("MESH_OUTBOUND", "127.0.0.1:26305")
            .env("MESH_DATA_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the app by hand"),
    );
    mesh.wait_for("mesh: up", Duration::from_secs(60));
    assert!(mesh.output().contains("yours"), "{}", mesh.output());
    // Read as soon as the app answers: before or after `mesh: up`.
    const READ: &str = "contracts read from the app's reflection";
    let seen = mesh.output().lines().find(|l| l.contains(READ)).map(String::from);
    let read = seen.unwrap_or_else(|| mesh.wait_for(READ, Duration::from_secs(30)));
    assert!(read.contains("service=reviews"), "{read}");
    drop(app);
    mesh.signal(Signal::SIGTERM);
    mesh.wait(Duration::from_secs(40));
}

/// A child the test started itself, ended even when the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
