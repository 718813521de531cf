//! The `gateway_token` fuzz target's seed corpus and every input that ever
//! crashed it (`fuzz/corpus/gateway_token/`, `fuzz/artifacts/gateway_token/`),
//! replayed as ordinary tests on the stable toolchain through the entry point
//! the target calls: CI needs no nightly or sanitizer build, and what once
//! broke the token parser stays fixed.

use std::path::{Path, PathBuf};

use meshwork_gateway::fuzzing;

const TARGET: &str = "gateway_token";

/// Every saved input of the target; there must be seeds.
fn inputs() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for folder in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(TARGET)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let input = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            inputs.push((path, input));
        }
    }
    assert!(
        !inputs.is_empty(),
        "no saved inputs for {TARGET} under {}",
        root.display()
    );
    inputs
}

#[test]
fn gateway_token() {
    for (_, input) in inputs() {
        fuzzing::token(&input);
    }
}

/// The seeds reach past the signature: the one signed by the fuzz key with
/// valid claims verifies, and only that one. (Inputs a local fuzzing run
/// added next to the seeds are not seeds.)
#[test]
fn the_seeds_reach_the_claims() {
    let is_seed = |path: &PathBuf| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"))
    };
    let verified: Vec<_> = inputs()
        .into_iter()
        .filter(|(path, _)| is_seed(path))
        .filter_map(|(path, input)| fuzzing::verified(&input).map(|p| (path, p)))
        .collect();
    let names: Vec<_> = verified
        .iter()
        .map(|(path, _)| path.file_name().and_then(|n| n.to_str()).unwrap_or_default())
        .collect();
    assert_eq!(names, ["seed-valid"]);
    let principal = &verified[0].1;
    assert_eq!(principal.user_id, "user-1");
    assert_eq!(principal.roles, ["admin"]);
    assert_eq!(principal.scopes, ["cart", "orders"]);
}
