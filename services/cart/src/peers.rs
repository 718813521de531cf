//! Calls to the other services, all over the one sidecar channel. Each error says
//! which step failed and keeps the peer's status code.

use meshwork_proto::{
    catalog::{
        GetProductRequest, Product, ReservationRequest, ReserveStockRequest, StockItem,
        catalog_service_client::CatalogServiceClient,
    },
    payments::{ChargeRequest, ChargeResponse, payment_service_client::PaymentServiceClient},
    users::{GetUserRequest, User, user_service_client::UserServiceClient},
};
use meshwork_service_kit::propagate::outbound;
use tonic::{Code, Status, metadata::MetadataMap, transport::Channel};

use crate::Error;

#[derive(Debug, Clone)]
pub struct Peers {
    channel: Channel,
}

fn peer(step: impl Into<String>) -> impl FnOnce(Status) -> Error {
    move |status| Error::Peer {
        step: step.into(),
        status,
    }
}

impl Peers {
    pub fn new(channel: Channel) -> Self {
        Peers { channel }
    }

    /// The product, or [`Error::UnknownProduct`] if the catalog does not know it.
    pub async fn product(&self, inbound: &MetadataMap, product_id: &str) -> Result<Product, Error> {
        let request = outbound(
            inbound,
            GetProductRequest {
                product_id: product_id.to_owned(),
            },
        );
        match CatalogServiceClient::new(self.channel.clone())
            .get_product(request)
            .await
        {
            Ok(response) => Ok(response.into_inner()),
            Err(status) if status.code() == Code::NotFound => Err(Error::UnknownProduct(product_id.to_owned())),
            Err(status) => Err(peer(format!("checking product '{product_id}' with the catalog"))(
                status,
            )),
        }
    }

    /// The user, or [`Error::UnknownUser`] if users does not know them; `step` names
    /// what asked, for other errors.
    pub async fn user(&self, inbound: &MetadataMap, user_id: &str, step: &str) -> Result<User, Error> {
        let request = outbound(
            inbound,
            GetUserRequest {
                user_id: user_id.to_owned(),
            },
        );
        match UserServiceClient::new(self.channel.clone()).get_user(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) if status.code() == Code::NotFound => Err(Error::UnknownUser(user_id.to_owned())),
            Err(status) => Err(peer(format!("{step}: looking up user '{user_id}'"))(status)),
        }
    }

    /// Saga step 1: holds the cart's units under the checkout's key and answers with
    /// the products (prices) as they are now.
    pub async fn reserve(
        &self,
        inbound: &MetadataMap,
        reservation_id: &str,
        items: Vec<StockItem>,
        hold: std::time::Duration,
    ) -> Result<Vec<Product>, Error> {
        let request = ReserveStockRequest {
            reservation_id: reservation_id.to_owned(),
            items,
            hold_seconds: i32::try_from(hold.as_secs()).unwrap_or(i32::MAX),
        };
        CatalogServiceClient::new(self.channel.clone())
            .reserve_stock(outbound(inbound, request))
            .await
            .map(|r| r.into_inner().products)
            .map_err(peer("checkout: reserving stock with the catalog"))
    }

    /// Saga step 3, after the charge: the reserved units are sold.
    pub async fn confirm(&self, inbound: &MetadataMap, reservation_id: &str) -> Result<(), Error> {
        let request = ReservationRequest {
            reservation_id: reservation_id.to_owned(),
        };
        CatalogServiceClient::new(self.channel.clone())
            .confirm_reservation(outbound(inbound, request))
            .await
            .map(drop)
            .map_err(peer("checkout: confirming the stock reservation with the catalog"))
    }

    /// Compensation: the reserved units go back into stock. A reservation the
    /// catalog never made (the reserve step was lost on its way) is released too.
    pub async fn release(&self, inbound: &MetadataMap, reservation_id: &str) -> Result<(), Error> {
        let request = ReservationRequest {
            reservation_id: reservation_id.to_owned(),
        };
        match CatalogServiceClient::new(self.channel.clone())
            .release_reservation(outbound(inbound, request))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(peer("checkout: releasing the stock reservation")(status)),
        }
    }

    pub async fn charge(&self, inbound: &MetadataMap, charge: ChargeRequest) -> Result<ChargeResponse, Error> {
        PaymentServiceClient::new(self.channel.clone())
            .charge(outbound(inbound, charge))
            .await
            .map(tonic::Response::into_inner)
            .map_err(peer("checkout: charging through payments"))
    }
}
