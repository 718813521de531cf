//! The arguments every service takes from `mesh serve <name> ...`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

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
}

impl ServeArgs {
    /// Checks what clap's parser checks too, for arguments built in code.
    pub fn validate(&self) -> Result<(), String> {
        ensure_loopback(self.listen)
    }

    /// The path of the service's SQLite database: `<data-dir>/<name>.db`.
    pub fn db_path(&self, name: &str) -> PathBuf {
        db_path(&self.data_dir, name)
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
}
