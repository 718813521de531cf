//! Calls to the other services, all over the one sidecar channel. Each error says
//! which step failed and keeps the peer's status code.

use meshwork_proto::{
    catalog::{BatchGetProductsRequest, GetProductRequest, Product, catalog_service_client::CatalogServiceClient},
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

    pub async fn user(&self, inbound: &MetadataMap, user_id: &str) -> Result<User, Error> {
        let request = outbound(
            inbound,
            GetUserRequest {
                user_id: user_id.to_owned(),
            },
        );
        UserServiceClient::new(self.channel.clone())
            .get_user(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(peer(format!("checkout: looking up user '{user_id}'")))
    }

    /// Current prices and stock of `product_ids`, in one call, in the order asked.
    pub async fn products(&self, inbound: &MetadataMap, product_ids: Vec<String>) -> Result<Vec<Product>, Error> {
        let request = outbound(inbound, BatchGetProductsRequest { product_ids });
        CatalogServiceClient::new(self.channel.clone())
            .batch_get_products(request)
            .await
            .map(|r| r.into_inner().products)
            .map_err(peer("checkout: pricing the cart with the catalog"))
    }

    pub async fn charge(&self, inbound: &MetadataMap, charge: ChargeRequest) -> Result<ChargeResponse, Error> {
        PaymentServiceClient::new(self.channel.clone())
            .charge(outbound(inbound, charge))
            .await
            .map(tonic::Response::into_inner)
            .map_err(peer("checkout: charging through payments"))
    }
}
