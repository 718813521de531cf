//! The shop's Kubernetes manifests, as `mesh k8s` renders them and `mesh
//! certs --secrets` writes the certificates, validated offline against the
//! Kubernetes 1.37 API schemas (the `kubernetes-validate` package, in the
//! venv scripts/test installs), strictly: an unknown field fails too. A
//! copy with a wrong type must be refused, or the validation proves nothing.
//! The validator runs without a network (`unshare --net`): the schemas it
//! checks against are the ones it ships.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const KUBERNETES: &str = "1.37";

fn validator() -> PathBuf {
    let venv = std::env::var("MESHWORK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv"));
    let bin = venv.join("bin/kubernetes-validate");
    assert!(
        bin.is_file(),
        "no kubernetes-validate at {}: run the tests with scripts/test, which installs it",
        bin.display()
    );
    bin
}

fn mesh(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .output()
        .expect("run mesh");
    assert!(
        out.status.success(),
        "mesh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new("unshare")
        .arg("--net")
        .arg(validator())
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_shops_manifests_and_secrets_validate_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The repository's shop, with its state (certificates) in the temp folder.
    let shop = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh.toml")).expect("mesh.toml");
    let config = dir.path().join("mesh.toml");
    std::fs::write(&config, shop).expect("write mesh.toml");
    let config = config.to_str().expect("utf-8");

    let rendered = mesh(&["k8s", "--config", config, "--namespace", "shop"]);
    let manifests = dir.path().join("shop.yaml");
    std::fs::write(&manifests, &rendered.stdout).expect("write manifests");
    let (ok, report) = validate(std::slice::from_ref(&manifests));
    assert!(ok, "the manifests do not validate:\n{report}");
    for object in [
        "namespace/shop",
        "configmap/mesh",
        "service/catalog",
        "deployment/catalog",
        "service/gateway",
        "deployment/gateway",
    ] {
        assert!(
            report.contains(&format!("passed for resource {object} against version {KUBERNETES}")),
            "{object} was not validated:\n{report}"
        );
    }
    let passed = report.matches("passed for resource").count();
    assert_eq!(
        passed, 14,
        "namespace, ConfigMap, PostgreSQL Service and StatefulSet, 4 × (Service, Deployment), gateway Service and Deployment:\n{report}"
    );

    // One file per object, as `--out` writes them: the same objects.
    let out = dir.path().join("out");
    mesh(&[
        "k8s",
        "--config",
        config,
        "--namespace",
        "shop",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("out")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 14, "{files:?}");
    let (ok, report) = validate(&files);
    assert!(ok, "the files of --out do not validate:\n{report}");
    assert_eq!(report.matches("passed for resource").count(), 14, "{report}");

    let secrets = dir.path().join("secrets.yaml");
    mesh(&[
        "certs",
        "--config",
        config,
        "--secrets",
        secrets.to_str().expect("utf-8"),
        "--namespace",
        "shop",
    ]);
    let (ok, report) = validate(std::slice::from_ref(&secrets));
    assert!(ok, "the Secrets do not validate:\n{report}");
    assert_eq!(report.matches("passed for resource secret/").count(), 6, "{report}");

    // The validator refuses what the API server would: a wrong type.
    let text = String::from_utf8(rendered.stdout).expect("utf-8");
    assert!(text.contains("  replicas: 1\n"));
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, text.replacen("  replicas: 1\n", "  replicas: one\n", 1)).expect("write");
    let (ok, report) = validate(&[broken]);
    assert!(!ok, "a string for replicas passed:\n{report}");
    assert!(
        report.contains("spec.replicas: 'one' is not of type 'integer'"),
        "{report}"
    );
}
