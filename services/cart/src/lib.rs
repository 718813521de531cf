//! The cart service (`shop.cart.v1.CartService`): each user's cart in `cart.db` (or
//! PostgreSQL), and
//! the checkout that prices it through the catalog, charges it through payments and
//! empties it. Every call to another service goes to the own sidecar.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod checkout;
mod db;
mod error;
mod locks;
mod peers;
mod recovery;
mod service;
pub mod settings;
#[cfg(test)]
mod test_shop;
mod validate;

use std::{net::SocketAddr, path::Path};

use meshwork_proto::cart::cart_service_server::CartServiceServer;
use meshwork_service_kit::{Database, ServeArgs};

pub use error::Error;
pub use service::Cart;
pub use settings::Settings;

/// The service's mesh name.
pub const NAME: &str = "cart";
/// The gRPC service it serves.
pub const GRPC_SERVICE: &str = "shop.cart.v1.CartService";

/// Builds the gRPC service over `<data_dir>/cart.db`, calling users, catalog and
/// payments through the sidecar at `sidecar` (connected lazily, on first call).
pub async fn service(data_dir: &Path, sidecar: SocketAddr) -> anyhow::Result<CartServiceServer<Cart>> {
    service_with(&Database::sqlite_in(data_dir, NAME), sidecar, Settings::default()).await
}

/// Like [`service`], with the carts in `database` and the given settings.
pub async fn service_with(
    database: &Database,
    sidecar: SocketAddr,
    settings: Settings,
) -> anyhow::Result<CartServiceServer<Cart>> {
    Ok(CartServiceServer::new(Cart::open(database, sidecar, settings).await?))
}

/// Serves the cart on `args.listen` until SIGTERM or Ctrl-C, with settings
/// from the environment.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    meshwork_service_kit::init_tracing();
    let settings = Settings::from_env()?;
    let service = service_with(&args.database(NAME)?, args.sidecar, settings).await?;
    meshwork_service_kit::serve(&args, tonic::service::Routes::new(service), &[GRPC_SERVICE]).await?;
    Ok(())
}
