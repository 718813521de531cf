//! The fuzz targets' seed corpora and every input that ever crashed one
//! (`fuzz/corpus/<target>/`, `fuzz/artifacts/<target>/`), replayed as
//! ordinary tests on the stable toolchain, through the same entry points the
//! targets call: CI needs no nightly or sanitizer build, and what once broke
//! a parser stays fixed.

use std::path::Path;

use meshwork_proxy::fuzzing;

/// Runs `target`'s every saved input through `run`; there must be seeds.
fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for folder in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let input = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            run(&input);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no saved inputs for {target} under {}", root.display());
}

#[test]
fn grpc_timeout() {
    replay("grpc_timeout", fuzzing::grpc_timeout);
}

#[test]
fn grpc_path() {
    replay("grpc_path", fuzzing::grpc_path);
}

#[test]
fn trace_headers() {
    replay("trace_headers", fuzzing::trace_headers);
}

#[test]
fn mesh_toml() {
    replay("mesh_toml", fuzzing::mesh_toml);
}

#[test]
fn http2_server() {
    replay("http2_server", fuzzing::http2_server);
}
