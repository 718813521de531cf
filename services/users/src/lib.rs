//! The users service (`shop.users.v1.UserService`): accounts with argon2id password
//! hashes and roles, log-in that returns an EdDSA JWT, the keys that verify those
//! tokens (a JWKS, following key rotation), and per-user preferences.
//!
//! State: the accounts, OAuth clients and the JWT signing keys in `users.db` in
//! the data dir, or in the service's PostgreSQL database (which replicas on
//! several machines share); and `users-jwt-public.pem` in the data dir, the
//! current key's public half. Settings beyond the
//! common arguments come from `MESH_USERS_*` (see [`settings`]).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod db;
mod error;
mod key_files;
mod key_store;
mod keys;
mod oauth;
mod password;
mod service;
pub mod settings;
mod validate;

use std::path::Path;

use meshwork_proto::users::user_service_server::UserServiceServer;
use meshwork_service_kit::{Database, ServeArgs};

pub use error::Error;
pub use key_files::{KEYS_DIR, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE};
pub use keys::{PUBLISH_MARGIN, REFRESH};
pub use service::Users;
pub use settings::{DEFAULT_AUDIENCE, Settings, TOKEN_ISSUER, TOKEN_TTL};

/// The service's mesh name.
pub const NAME: &str = "users";
/// The gRPC service it serves.
pub const GRPC_SERVICE: &str = "shop.users.v1.UserService";

/// Builds the gRPC service over the state in `data_dir` (created if missing),
/// with the default settings. The users service calls no other service, so it
/// takes no sidecar address.
pub async fn service(data_dir: &Path) -> anyhow::Result<UserServiceServer<Users>> {
    service_with(data_dir, &Database::sqlite_in(data_dir, NAME), Settings::default()).await
}

/// [`service`] with the accounts in `database` and `settings` (audience, token
/// lifetime, key rotation, admins).
pub async fn service_with(
    data_dir: &Path,
    database: &Database,
    settings: Settings,
) -> anyhow::Result<UserServiceServer<Users>> {
    Ok(UserServiceServer::new(Users::open(data_dir, database, settings).await?))
}

/// Serves the users service on `args.listen` until SIGTERM or Ctrl-C, with
/// settings from the environment.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    meshwork_service_kit::init_tracing();
    let settings = Settings::from_env()?;
    let service = service_with(&args.data_dir, &args.database(NAME)?, settings).await?;
    meshwork_service_kit::serve(&args, tonic::service::Routes::new(service), &[GRPC_SERVICE]).await?;
    Ok(())
}
