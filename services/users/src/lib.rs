//! The users service (`shop.users.v1.UserService`): accounts with argon2id password
//! hashes, log-in that returns an EdDSA JWT, and per-user preferences.
//!
//! State in the data dir: `users.db` (unless the accounts live in PostgreSQL), the JWT
//! signing key `users-jwt-private.pem` (PKCS#8, mode 0600) and its public half
//! `users-jwt-public.pem` for token verifiers.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod db;
mod error;
mod keys;
mod password;
mod service;
mod validate;

use std::path::Path;

use meshwork_proto::users::user_service_server::UserServiceServer;
use meshwork_service_kit::{Database, ServeArgs};

pub use error::Error;
pub use keys::{PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, TOKEN_ISSUER, TOKEN_TTL};
pub use service::Users;

/// The service's mesh name.
pub const NAME: &str = "users";
/// The gRPC service it serves.
pub const GRPC_SERVICE: &str = "shop.users.v1.UserService";

/// Builds the gRPC service over the state in `data_dir` (created if missing).
/// The users service calls no other service, so it takes no sidecar address.
pub async fn service(data_dir: &Path) -> anyhow::Result<UserServiceServer<Users>> {
    service_with(data_dir, &Database::sqlite_in(data_dir, NAME)).await
}

/// Like [`service`], with the accounts in `database`.
pub async fn service_with(data_dir: &Path, database: &Database) -> anyhow::Result<UserServiceServer<Users>> {
    Ok(UserServiceServer::new(Users::open(data_dir, database).await?))
}

/// Serves the users service on `args.listen` until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    meshwork_service_kit::init_tracing();
    let service = service_with(&args.data_dir, &args.database(NAME)?).await?;
    meshwork_service_kit::serve(&args, tonic::service::Routes::new(service), &[GRPC_SERVICE]).await?;
    Ok(())
}
