//! The payments service (`shop.payments.v1.PaymentService`): idempotent charges that
//! record orders in `payments.db` (or PostgreSQL), order lookups and refunds. There is no real payment
//! provider: a valid charge is recorded as PAID.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod db;
mod error;
mod service;
mod validate;

use std::{net::SocketAddr, path::Path};

use meshwork_proto::payments::payment_service_server::PaymentServiceServer;
use meshwork_service_kit::{Database, ServeArgs};

pub use error::Error;
pub use service::Payments;

/// The service's mesh name.
pub const NAME: &str = "payments";
/// The gRPC service it serves.
pub const GRPC_SERVICE: &str = "shop.payments.v1.PaymentService";

/// Builds the gRPC service over `<data_dir>/payments.db` (created if new). A
/// refund puts the units back through the catalog, reached at `sidecar`
/// (connected lazily, on first call).
pub async fn service(data_dir: &Path, sidecar: SocketAddr) -> anyhow::Result<PaymentServiceServer<Payments>> {
    service_with(&Database::sqlite_in(data_dir, NAME), sidecar).await
}

/// Like [`service`], with the orders in `database`.
pub async fn service_with(database: &Database, sidecar: SocketAddr) -> anyhow::Result<PaymentServiceServer<Payments>> {
    Ok(PaymentServiceServer::new(Payments::open(database, sidecar).await?))
}

/// Serves payments on `args.listen` until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    meshwork_service_kit::init_tracing();
    let service = service_with(&args.database(NAME)?, args.sidecar).await?;
    meshwork_service_kit::serve(&args, tonic::service::Routes::new(service), &[GRPC_SERVICE]).await?;
    Ok(())
}
