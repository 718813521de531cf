//! `mesh serve <service>`: runs one of the shop's apps. The launcher starts
//! these; each only knows its own address, its sidecar and its data folder.

use anyhow::Result;
use clap::{Args, ValueEnum};
use meshwork_service_kit::ServeArgs;

#[derive(Args)]
pub struct ServeCommand {
    /// Which service to run.
    service: ServiceName,
    #[command(flatten)]
    args: ServeArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum ServiceName {
    Users,
    Catalog,
    Cart,
    Payments,
}

pub async fn run(command: ServeCommand) -> Result<()> {
    // Spans are flushed when the guard drops, after the service has stopped.
    let _telemetry = meshwork_service_kit::init_telemetry(command.service.name());
    match command.service {
        ServiceName::Users => meshwork_users::run(command.args).await,
        ServiceName::Catalog => meshwork_catalog::run(command.args).await,
        ServiceName::Cart => meshwork_cart::run(command.args).await,
        ServiceName::Payments => meshwork_payments::run(command.args).await,
    }
}

impl ServiceName {
    /// The OpenTelemetry `service.name`, as mesh.toml names the service.
    fn name(self) -> &'static str {
        match self {
            ServiceName::Users => "users",
            ServiceName::Catalog => "catalog",
            ServiceName::Cart => "cart",
            ServiceName::Payments => "payments",
        }
    }
}

/// The `mesh serve` name of a service in mesh.toml, if this binary can run it.
pub fn known_service(name: &str) -> bool {
    ServiceName::from_str(name, false).is_ok()
}
