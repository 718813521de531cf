//! The catalog service (`shop.catalog.v1.CatalogService`): products, prices and stock
//! in `catalog.db` (or PostgreSQL), seeded on first start, with a live feed of every
//! change.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod db;
mod error;
mod prices;
mod seed;
mod service;
mod stock;
mod validate;
mod watch;

use std::path::Path;

use meshwork_proto::catalog::catalog_service_server::CatalogServiceServer;
use meshwork_service_kit::{Database, ServeArgs};

pub use error::Error;
pub use service::Catalog;

/// The service's mesh name.
pub const NAME: &str = "catalog";
/// The gRPC service it serves.
pub const GRPC_SERVICE: &str = "shop.catalog.v1.CatalogService";

/// Builds the gRPC service over `<data_dir>/catalog.db` (created and seeded if new).
/// The catalog calls no other service, so it takes no sidecar address.
pub async fn service(data_dir: &Path) -> anyhow::Result<CatalogServiceServer<Catalog>> {
    service_with(&Database::sqlite_in(data_dir, NAME)).await
}

/// Like [`service`], over `database`.
pub async fn service_with(database: &Database) -> anyhow::Result<CatalogServiceServer<Catalog>> {
    Ok(CatalogServiceServer::new(Catalog::open(database).await?))
}

/// Serves the catalog on `args.listen` until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    meshwork_service_kit::init_tracing();
    let service = service_with(&args.database(NAME)?).await?;
    meshwork_service_kit::serve(&args, tonic::service::Routes::new(service), &[GRPC_SERVICE]).await?;
    Ok(())
}
