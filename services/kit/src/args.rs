//! The arguments every service takes from `mesh serve <name> ...`.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::db::{DATABASE_URL_ENV, Database, UrlError};

/// Where a service listens, where its sidecar's outbound port is, and where it keeps
/// its state.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ServeArgs {
    /// Address to serve gRPC on; loopback only, because the sidecar is the only
    /// thing that should ever reach the app.
    #[arg(long, value_parser = parse_loopback)]
    pub listen: SocketAddr,
    /// The own sidecar's outbound address; every call to another service goes there.
    #[arg(long)]
    pub sidecar: SocketAddr,
    /// Directory for the service's database and other state; created if missing.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// A PostgreSQL database for the service, shared by its replicas wherever
    /// they run (postgres://user:password@host:5432/name). Without it the
    /// service keeps SQLite in the data dir.
    #[arg(long, value_name = "URL", env = DATABASE_URL_ENV, hide_env_values = true, value_parser = secret_url)]
    pub database_url: Option<SecretUrl>,
}

/// A database URL as given, checked by [`ServeArgs::database`] rather than by
/// clap, whose errors would print it, password and all. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(pub String);

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretUrl(..)")
    }
}

fn secret_url(s: &str) -> Result<SecretUrl, std::convert::Infallible> {
    Ok(SecretUrl(s.to_owned()))
}

/// A database URL from the command line or the environment that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--database-url (or {DATABASE_URL_ENV}): {0}")]
pub struct DatabaseArgError(UrlError);

impl ServeArgs {
    /// Checks what clap's parser checks too, for arguments built in code.
    pub fn validate(&self) -> Result<(), String> {
        ensure_loopback(self.listen)
    }

    /// The path of the service's SQLite database: `<data-dir>/<name>.db`.
    pub fn db_path(&self, name: &str) -> PathBuf {
        db_path(&self.data_dir, name)
    }

    /// The service's database: the PostgreSQL URL if one was given, else
    /// SQLite at [`db_path`](Self::db_path).
    pub fn database(&self, name: &str) -> Result<Database, DatabaseArgError> {
        match &self.database_url {
            Some(SecretUrl(url)) => Database::postgres(url).map_err(DatabaseArgError),
            None => Ok(Database::sqlite_in(&self.data_dir, name)),
        }
    }
}

/// `<data_dir>/<name>.db`.
pub fn db_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!("{name}.db"))
}

/// Parses a socket address and refuses any that is not on the loopback interface.
pub fn parse_loopback(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|e| format!("'{s}' is not a socket address: {e}"))?;
    ensure_loopback(addr)?;
    Ok(addr)
}

fn ensure_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "refusing to listen on {addr}: services serve on loopback only (for example 127.0.0.1:{}); \
             the sidecar is what other pods reach",
            addr.port()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn loopback_is_accepted_and_others_refused() {
        assert!(parse_loopback("127.0.0.1:8080").is_ok());
        assert!(parse_loopback("[::1]:8080").is_ok());
        let err = parse_loopback("0.0.0.0:8080").expect_err("wildcard refused");
        assert!(err.contains("loopback"), "{err}");
        assert!(parse_loopback("10.0.0.1:80").is_err());
        assert!(parse_loopback("nonsense").is_err());
    }

    #[test]
    fn parses_from_the_command_line() {
        let cli = Cli::try_parse_from([
            "serve",
            "--listen",
            "127.0.0.1:7001",
            "--sidecar",
            "127.0.0.1:7100",
            "--data-dir",
            "/tmp/x",
        ])
        .expect("parses");
        assert_eq!(cli.serve.db_path("users"), PathBuf::from("/tmp/x/users.db"));
        assert!(cli.serve.validate().is_ok());
        assert_eq!(
            cli.serve.database("users").expect("default"),
            Database::Sqlite("/tmp/x/users.db".into())
        );
        assert!(
            Cli::try_parse_from([
                "serve",
                "--listen",
                "0.0.0.0:1",
                "--sidecar",
                "127.0.0.1:2",
                "--data-dir",
                "d"
            ])
            .is_err()
        );
    }

    #[test]
    fn a_database_url_is_checked_without_printing_it() {
        let args = |url: &str| {
            Cli::try_parse_from([
                "serve",
                "--listen",
                "127.0.0.1:7001",
                "--sidecar",
                "127.0.0.1:7100",
                "--data-dir",
                "/tmp/x",
                "--database-url",
                url,
            ])
            .expect("clap takes any text")
            .serve
        };
        let good = args("postgres://shop:pw@127.0.0.1:5432/cart");
        assert_eq!(
            good.database("cart").expect("valid").dialect(),
            crate::db::Dialect::Postgres
        );
        assert!(!format!("{good:?}").contains("pw@"));
        let err = args("mysql://shop:pw@h/cart").database("cart").expect_err("refused");
        let text = err.to_string();
        assert!(
            text.starts_with("--database-url (or MESH_DATABASE_URL): 'mysql' is not a PostgreSQL URL"),
            "{text}"
        );
        assert!(!text.contains("pw"), "{text}");
    }
}
