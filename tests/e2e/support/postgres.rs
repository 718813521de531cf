//! The shop's storage as the tests see it: SQLite files in the mesh's state folder,
//! or a real PostgreSQL server that the tests start themselves (Debian's
//! `postgresql`, which scripts/test installs) on a port of their own with a
//! throw-away data folder, stopped and deleted when the last test using it ends,
//! panics included. A shop test is written once and run on each [`Backend`].

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use meshwork_service_kit::{
    Database,
    db::sqlx::{self, Connection, any::AnyPoolOptions},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The PostgreSQL server's port: below 32768, where Linux's ephemeral ports
/// begin (an outgoing connection of another test may hold a port up there, and
/// the server then cannot bind it), and outside every mesh test's port range.
pub const POSTGRES_PORT: u16 = 24432;
/// The superuser `initdb` makes; the server trusts local connections.
const USER: &str = "meshwork";
/// The shop's services, each with a database in the mesh.
pub const SHOP: [&str; 4] = ["users", "catalog", "cart", "payments"];

/// Where the shop under test keeps its data.
pub enum Backend {
    /// `<state dir>/data/<service>.db`, as `mesh up` does by default.
    Sqlite,
    /// One database on the shared test server, for every service of the shop
    /// (each service migrates its own tables, so they share it as they could in
    /// production).
    Postgres { server: Arc<Postgres>, database: String },
}

impl Backend {
    /// A fresh database named `database` on the test server (started if no
    /// other test is using it).
    pub async fn postgres(database: &str) -> Backend {
        let server = Postgres::shared().await;
        server.create_database(database).await;
        Backend::Postgres {
            server,
            database: database.to_owned(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// The `database` key the shop's services get in mesh.toml, if any.
    pub fn mesh_toml_key(&self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres { server, database } => Some(format!("database = \"{}\"", server.url(database))),
        }
    }

    /// Adds `extra` lines and this backend's database to each shop service in
    /// the mesh.toml `text`.
    pub fn configure(&self, text: &str, extra: &str) -> String {
        let mut text = text.to_owned();
        for service in SHOP {
            let header = format!("[services.{service}]\n");
            assert!(text.contains(&header), "no {header} in the config");
            let mut lines = header.clone();
            for line in extra.lines().map(str::to_owned).chain(self.mesh_toml_key()) {
                lines.push_str(&line);
                lines.push('\n');
            }
            text = text.replace(&header, &lines);
        }
        text
    }

    /// Where `service` keeps its data when run in-process with `data_dir`.
    pub fn database(&self, data_dir: &Path, service: &str) -> Database {
        match self {
            Backend::Sqlite => Database::sqlite_in(data_dir, service),
            Backend::Postgres { server, database } => Database::postgres(&server.url(database)).expect("test URL"),
        }
    }

    /// The books of `service` in the mesh whose state folder is `state_dir`,
    /// read the way the service stores them.
    pub async fn books(&self, state_dir: &Path, service: &str) -> Books {
        sqlx::any::install_default_drivers();
        let url = match self {
            Backend::Sqlite => format!(
                "sqlite://{}",
                state_dir.join("data").join(format!("{service}.db")).display()
            ),
            Backend::Postgres { server, database } => server.url(database),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("open {service}'s database ({url}): {e}"));
        Books(pool)
    }
}

/// A service's tables, for the tests to count what the shop stored.
pub struct Books(sqlx::AnyPool);

impl Books {
    /// The one number `sql` selects.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.0)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The catalog's stock of `product`.
    pub async fn stock(&self, product: &str) -> i64 {
        sqlx::query_scalar::<_, i32>("SELECT stock FROM products WHERE id = $1")
            .bind(product)
            .fetch_one(&self.0)
            .await
            .map(i64::from)
            .unwrap_or_else(|e| panic!("stock of {product}: {e}"))
    }
}

/// A PostgreSQL server in a temporary folder, run as an unprivileged user when
/// the tests run as root (PostgreSQL refuses to run as root).
pub struct Postgres {
    child: Child,
    port: u16,
    log: PathBuf,
    // Dropped after the server has stopped: the data folder goes with it.
    _dir: tempfile::TempDir,
}

/// The server the running tests share; it stops when the last of them drops it.
static SHARED: tokio::sync::Mutex<Weak<Postgres>> = tokio::sync::Mutex::const_new(Weak::new());

impl Postgres {
    /// The server of the tests running now, started if there is none.
    pub async fn shared() -> Arc<Postgres> {
        let mut shared = SHARED.lock().await;
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(
            tokio::task::spawn_blocking(|| {
                wait_port_free(POSTGRES_PORT, Duration::from_secs(15));
                Postgres::start(POSTGRES_PORT)
            })
            .await
            .expect("start PostgreSQL"),
        );
        *shared = Arc::downgrade(&server);
        server
    }

    /// initdb in a fresh folder, then the server on 127.0.0.1:`port`, waiting
    /// until it accepts connections.
    pub fn start(port: u16) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("meshwork-pg")
            .tempdir()
            .expect("tempdir");
        // The server's user must reach its folders inside ours.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let (data, sockets, log) = (
            dir.path().join("data"),
            dir.path().join("sockets"),
            dir.path().join("log"),
        );
        let owner = server_user();
        for folder in [&data, &sockets] {
            fs::create_dir(folder).expect("mkdir");
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(folder, Some(uid), Some(gid)).expect("chown");
            }
        }
        let as_owner = |program: &str| {
            let mut command = Command::new(bin.join(program));
            if let Some((uid, gid)) = owner {
                command.uid(uid).gid(gid);
            }
            command
        };
        let initdb = as_owner("initdb")
            .args([
                "--auth=trust",
                "--no-locale",
                "--encoding=UTF8",
                "--no-sync",
                "-U",
                USER,
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        let log_file = fs::File::create(&log).expect("log file");
        let child = as_owner("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&sockets)
            .args(["-p", &port.to_string()])
            // A throw-away server: durability buys nothing here, speed does.
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
            ])
            .args([
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=32MB",
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("start postgres");
        let mut server = Postgres {
            child,
            port,
            log,
            _dir: dir,
        };
        server.wait_ready(Duration::from_secs(30));
        server
    }

    /// Polls with a connection attempt (the server's own readiness answer) until
    /// one succeeds; fails at once, with the server's log, if it exited.
    fn wait_ready(&mut self, within: Duration) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let deadline = Instant::now() + within;
        let url = self.url("postgres");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "postgres exited ({status}) before accepting connections:\n{}",
                    self.log()
                );
            }
            match runtime.block_on(sqlx::PgConnection::connect(&url)) {
                Ok(conn) => {
                    let _ = runtime.block_on(conn.close());
                    return;
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!(
                    "postgres on port {} not ready within {within:?}: {e}\n{}",
                    self.port,
                    self.log()
                ),
            }
        }
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn create_database(&self, name: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to postgres");
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = conn.close().await;
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: clients are disconnected at once.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- PostgreSQL log ---\n{}", self.log());
        }
    }
}

/// Waits until nothing listens on `port`: the server of tests that just ended
/// may still be shutting down.
fn wait_port_free(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "port {port} still in use after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The newest PostgreSQL under /usr/lib/postgresql/<version>/bin.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}; scripts/test installs Debian's postgresql", root.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let version = path.file_name()?.to_str()?.parse().ok()?;
            path.join("bin/postgres").is_file().then(|| (version, path.join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no PostgreSQL under {}; scripts/test installs it", root.display()))
        .1
}

/// Who runs the server: as root, the `postgres` user the package made (or
/// `nobody`); otherwise whoever runs the tests.
fn server_user() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let ids = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name) && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    };
    Some(
        ids("postgres")
            .or_else(|| ids("nobody"))
            .expect("a postgres or nobody user to run PostgreSQL as"),
    )
}
