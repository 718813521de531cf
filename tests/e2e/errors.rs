//! One message per cause: an error whose text repeats its source's, because
//! it both prints the source and returns it as `source()`, says the cause
//! twice wherever a binary prints the whole chain (anyhow's `{:#}`). Real
//! errors from each crate that reads files or binds sockets, and the real
//! `mesh proxy` binary's message, are checked for a repeated segment.

use std::time::Duration;

use crate::support::mesh_process::{MESH, MeshProcess};

/// Panics if a `: `-separated segment of `text` (a chain as `{:#}` prints
/// it) appears twice, which is how a repeated cause shows.
fn assert_each_cause_once(text: &str) {
    let segments: Vec<&str> = text.split(": ").map(str::trim).collect();
    for (i, segment) in segments.iter().enumerate() {
        assert!(
            !segments[i + 1..].contains(segment),
            "{segment:?} is said twice in: {text}"
        );
    }
}

fn chain(error: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::new(error))
}

#[test]
fn the_check_itself_catches_a_repeat() {
    let caught = std::panic::catch_unwind(|| {
        assert_each_cause_once("x: cannot read: No such file (os error 2): No such file (os error 2)")
    });
    assert!(caught.is_err());
}

#[tokio::test]
async fn every_crates_errors_say_each_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent/mesh.toml");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");

    let mut errors = Vec::new();
    let config = meshwork_config::MeshConfig::load(&missing).expect_err("no such config");
    errors.push(chain(config));
    let certs = meshwork_certs::ensure(
        &file.join("certs"),
        "meshwork.local",
        &["cart"],
        Duration::from_secs(3600),
        Duration::from_secs(60),
    )
    .expect_err("certificates under a file");
    errors.push(chain(certs));
    let Err(db) = meshwork_service_kit::db::open(
        &meshwork_service_kit::Database::Sqlite(file.join("db/shop.sqlite")),
        "shop",
        &[],
    )
    .await
    else {
        panic!("a database under a file opened");
    };
    errors.push(chain(db));
    // An address that is not this machine's.
    let bind = meshwork_service_kit::bind("192.0.2.1:1".parse().expect("addr"))
        .await
        .expect_err("bind elsewhere");
    errors.push(chain(bind));
    for text in &errors {
        eprintln!("{text}");
        assert_each_cause_once(text);
    }
}

#[test]
fn mesh_proxy_with_a_missing_config_says_why_once() {
    let mut proxy =
        MeshProcess::start_program(MESH, &["proxy", "--config", "/nonexistent.toml", "--name", "cart"], &[]);
    let line = proxy.wait_for("/nonexistent.toml", Duration::from_secs(10));
    assert!(!proxy.wait(Duration::from_secs(10)).success());
    assert!(line.contains("No such file or directory"), "{line}");
    assert_each_cause_once(&line);
}
