//! deploy/Dockerfile, built and run: the image the Kubernetes manifests use
//! must build from a clean checkout and run the shop as its unprivileged
//! user. A test binary of its own, so that its release build inside the
//! image (minutes on two cores) never runs beside the timing-sensitive e2e
//! tests: cargo runs test binaries one after another.
//!
//! It builds with buildah (no daemon; scripts/test installs it) in a
//! storage folder of its own under target/. The Dockerfile's base images
//! come from Docker Hub where it is reachable. Where it is not (CI here
//! reaches package registries only), the test makes stand-ins under the
//! same names, in its own storage only: Debian bookworm from Debian's
//! mirror (debootstrap), and for the build stage the same plus gcc and the
//! Rust toolchain these tests were built with, as the official `rust`
//! image has them. The stand-ins carry this machine's CA roots, since its
//! egress to the registries presents its own certificate.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const IMAGE: &str = "localhost/meshwork/mesh:test";
/// The Dockerfile's two bases, as its FROM lines name them.
const RUST_BASE: &str = "docker.io/library/rust:1.95-slim-bookworm";
const DEBIAN_BASE: &str = "docker.io/library/debian:bookworm-slim";
/// The user the manifests run every container as.
const UID: &str = "65532";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// buildah with this test's own storage, so that stand-ins never take the
/// official names in the machine's storage.
struct Buildah {
    root: PathBuf,
    /// overlay where the kernel lets buildah mount it, else vfs (a full copy
    /// per layer: slower, but it works anywhere).
    driver: &'static str,
}

impl Buildah {
    fn new() -> Self {
        let root = repo().join("target/image-test");
        std::fs::create_dir_all(&root).expect("target/image-test");
        let overlay = Buildah {
            root: root.clone(),
            driver: "overlay",
        };
        let mounts = overlay
            .command()
            .args(["from", "scratch"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .is_some_and(|container| {
                let mounted = overlay.command().args(["mount", &container]).output();
                let _ = overlay.command().args(["rm", &container]).output();
                mounted.is_ok_and(|o| o.status.success())
            });
        if mounts {
            overlay
        } else {
            Buildah { root, driver: "vfs" }
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("buildah");
        command
            .arg("--root")
            .arg(self.root.join(format!("storage-{}", self.driver)))
            .arg("--runroot")
            .arg(self.root.join(format!("run-{}", self.driver)))
            .arg("--storage-driver")
            .arg(self.driver)
            // No user namespaces inside CI's sandbox: chroot isolation.
            .env("BUILDAH_ISOLATION", "chroot");
        command
    }

    /// `buildah args…`, which must succeed; its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run buildah");
        ok(&format!("buildah {}", args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn has_image(&self, name: &str) -> bool {
        self.command()
            .args(["inspect", "--type", "image", name])
            .output()
            .expect("run buildah")
            .status
            .success()
    }

    /// The official base, or a stand-in made from `rootfs` under its name.
    fn base(&self, name: &str, rootfs: impl FnOnce() -> PathBuf, env: &[&str]) {
        if self.has_image(name) {
            return;
        }
        let pulled = self
            .command()
            .args(["pull", "--retry", "0", "--quiet", name])
            .output()
            .expect("run buildah");
        if pulled.status.success() {
            return;
        }
        eprintln!(
            "image: {name} cannot be pulled here ({}); building a stand-in",
            String::from_utf8_lossy(&pulled.stderr).trim()
        );
        let rootfs = rootfs();
        let container = self.run(&["from", "scratch"]);
        let mount = self.run(&["mount", &container]);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(rootfs.join("."))
            .arg(&mount)
            .output()
            .expect("run cp");
        ok("copy the stand-in's files", &copied);
        self.run(&["umount", &container]);
        let mut config = vec!["config"];
        for var in env {
            config.extend(["--env", var]);
        }
        config.push(&container);
        self.run(&config);
        self.run(&["commit", "--quiet", &container, name]);
        self.run(&["rm", &container]);
    }
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh(what: &str, script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).output().expect("run sh");
    ok(what, &out);
}

/// Debian bookworm, minimal, with this machine's CA roots; made once.
fn bookworm(root: &Path) -> PathBuf {
    let dir = root.join("bookworm");
    if !dir.join(".done").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&dir)
            .arg("http://deb.debian.org/debian")
            .output()
            .expect("run debootstrap (scripts/test installs it)");
        ok("debootstrap bookworm", &out);
        std::fs::create_dir_all(dir.join("etc/ssl/certs")).expect("etc/ssl/certs");
        std::fs::copy(
            "/etc/ssl/certs/ca-certificates.crt",
            dir.join("etc/ssl/certs/ca-certificates.crt"),
        )
        .expect("CA roots");
        std::fs::write(dir.join(".done"), "").expect("stamp");
    }
    dir
}

/// bookworm plus gcc and this test's own Rust toolchain in /usr/local/cargo
/// (the official image's CARGO_HOME, which the Dockerfile's cache mount names).
fn rust_rootfs(root: &Path) -> PathBuf {
    let dir = root.join("rust");
    if !dir.join(".done").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let base = bookworm(root);
        let sysroot = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .expect("rustc");
        ok("rustc --print sysroot", &sysroot);
        let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
        sh(
            "make the rust stand-in",
            &format!(
                "cp -a '{base}' '{dir}'
                 chroot '{dir}' sh -ec 'apt-get update -qq; \
                     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null; \
                     rm -rf /var/lib/apt/lists/*'
                 cp /etc/ssl/certs/ca-certificates.crt '{dir}/etc/ssl/certs/ca-certificates.crt'
                 cp -a '{sysroot}' '{dir}/usr/local/cargo'
                 rm -rf '{dir}/usr/local/cargo/share/doc'",
                base = base.display(),
                dir = dir.display(),
            ),
        );
        std::fs::write(dir.join(".done"), "").expect("stamp");
    }
    dir
}

#[test]
fn the_dockerfile_builds_an_image_that_runs_the_shop_as_its_user() {
    for tool in ["buildah", "debootstrap"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "no {tool}: run the tests with scripts/test, which installs it"
        );
    }
    let buildah = Buildah::new();
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    for base in [RUST_BASE, DEBIAN_BASE] {
        let short = base.trim_start_matches("docker.io/library/");
        assert!(
            dockerfile.contains(&format!("FROM {short}")),
            "deploy/Dockerfile no longer builds FROM {short}: update this test's stand-ins"
        );
    }
    let root = buildah.root.clone();
    buildah.base(
        RUST_BASE,
        || rust_rootfs(&root),
        &[
            "PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "CARGO_HOME=/usr/local/cargo",
        ],
    );
    buildah.base(
        DEBIAN_BASE,
        || bookworm(&root),
        &["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    );

    // As the Dockerfile's header says: `docker build -f deploy/Dockerfile .`,
    // from the repository (its .dockerignore keeps target/ out).
    let repo = repo();
    let out = buildah
        .command()
        .args([
            "bud",
            "--network",
            "host",
            "--quiet",
            "-f",
            "deploy/Dockerfile",
            "-t",
            IMAGE,
        ])
        .arg(&repo)
        .output()
        .expect("run buildah bud");
    ok("buildah bud -f deploy/Dockerfile", &out);

    // The shop in the image, as its user, with the demo's checkout.
    let shop = tempfile::tempdir().expect("tempdir");
    let config = std::fs::read_to_string(repo.join("mesh.toml")).expect("mesh.toml");
    // Its own ports, away from the e2e tests' and Linux's ephemeral ones.
    let config = config
        .replace("127.0.0.1:7", "127.0.0.1:18")
        .replace("127.0.0.1:8080", "127.0.0.1:18080");
    std::fs::write(shop.path().join("mesh.toml"), config).expect("write mesh.toml");
    sh(
        "give the shop's folder to the image's user",
        &format!("chown -R {UID}:{UID} '{}'", shop.path().display()),
    );
    let container = buildah.run(&["from", IMAGE]);
    let volume = format!("{}:/shop", shop.path().display());
    let out = buildah
        .command()
        .args(["run", "--network", "host", "-v", &volume, &container, "--"])
        .args([
            "sh",
            "-c",
            // `mesh up --demo` stays up after the demo; stop it once the
            // demo has said how it ended.
            "id -u; mesh up --config /shop/mesh.toml --demo > /shop/up.log 2>&1 & up=$!; \
             for _ in $(seq 120); do grep -q 'demo: 8\\.\\|the demo failed' /shop/up.log && break; sleep 0.5; done; \
             kill -TERM $up; wait $up; echo \"mesh up exited $?\"",
        ])
        .output()
        .expect("run the image");
    buildah.run(&["rm", &container]);
    let log = std::fs::read_to_string(shop.path().join("up.log")).unwrap_or_default();
    ok(&format!("the shop in the image:\n{log}"), &out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with(&format!("{UID}\n")), "not run as {UID}: {said}");
    assert!(said.contains("mesh up exited 0"), "{said}\n{log}");
    assert!(
        log.contains("checked out: order") && log.contains("as ORDER_STATUS_PAID"),
        "the demo's checkout did not go through in the image:\n{log}"
    );
}
