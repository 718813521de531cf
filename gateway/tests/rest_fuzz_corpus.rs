//! The seed corpora of the `gateway_path_template` and `gateway_rest_request`
//! fuzz targets, and every input that ever crashed them
//! (`fuzz/corpus/<target>/`, `fuzz/artifacts/<target>/`), replayed as
//! ordinary tests on the stable toolchain through the entry points the
//! targets call.

use std::path::Path;

use meshwork_gateway::fuzzing;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for folder in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            inputs.push(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        }
    }
    assert!(!inputs.is_empty(), "no saved inputs for {target}");
    inputs
}

#[test]
fn gateway_path_template() {
    for input in inputs("gateway_path_template") {
        fuzzing::path_template(&input);
    }
}

#[test]
fn gateway_rest_request() {
    assert!(fuzzing::rest_routes() > 10, "the shop's routes load");
    for input in inputs("gateway_rest_request") {
        fuzzing::rest_request(&input);
    }
}
