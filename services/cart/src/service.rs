//! The gRPC face of the cart: validates requests, calls the store and (through the
//! sidecar) the catalog, and runs checkouts one at a time per user. A call on
//! behalf of an end user reaches only that user's own cart.

use std::{net::SocketAddr, sync::Arc};

use meshwork_proto::cart::{
    AddItemRequest, Cart as CartMessage, CartItem, CheckoutRequest, CheckoutResponse, GetCartRequest,
    RemoveItemRequest, cart_service_server::CartService,
};
use meshwork_service_kit::end_user::{require_user, require_user_in};
use tonic::{Request, Response, Status};

use crate::{
    checkout,
    db::{CartRow, Store},
    locks::KeyedLocks,
    peers::Peers,
    recovery,
    settings::Settings,
    validate,
};

/// The cart service over its store and the sidecar channel.
#[derive(Debug, Clone)]
pub struct Cart {
    store: Store,
    peers: Peers,
    settings: Settings,
    checkouts: Arc<KeyedLocks>,
}

impl Cart {
    /// Opens (or creates) the carts in `database`; peers are reached through
    /// `sidecar`. Starts the recovery of checkouts left open.
    pub async fn open(
        database: &meshwork_service_kit::Database,
        sidecar: SocketAddr,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let store = Store::open(database).await?;
        let peers = Peers::new(meshwork_service_kit::sidecar_channel(sidecar));
        recovery::spawn(store.clone(), peers.clone(), settings.clone());
        Ok(Cart {
            store,
            peers,
            settings,
            checkouts: Arc::default(),
        })
    }
}

fn to_proto(cart: CartRow) -> CartMessage {
    CartMessage {
        user_id: cart.user_id,
        items: cart
            .items
            .into_iter()
            .map(|i| CartItem {
                product_id: i.product_id,
                quantity: i.quantity,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl CartService for Cart {
    async fn add_item(&self, request: Request<AddItemRequest>) -> Result<Response<CartMessage>, Status> {
        let (metadata, _, req) = request.into_parts();
        require_user_in(&metadata, &req.user_id, "add to the cart")?;
        validate::quantity(req.quantity)?;
        validate::required("user_id", &req.user_id)?;
        validate::required("product_id", &req.product_id)?;
        self.peers.user(&metadata, &req.user_id, "adding to the cart").await?;
        self.peers.product(&metadata, &req.product_id).await?;
        let cart = self.store.add(req.user_id, req.product_id, req.quantity).await?;
        Ok(Response::new(to_proto(cart)))
    }

    async fn remove_item(&self, request: Request<RemoveItemRequest>) -> Result<Response<CartMessage>, Status> {
        require_user(&request, &request.get_ref().user_id, "remove from the cart")?;
        let req = request.into_inner();
        validate::required("user_id", &req.user_id)?;
        validate::required("product_id", &req.product_id)?;
        Ok(Response::new(to_proto(
            self.store.remove(req.user_id, req.product_id).await?,
        )))
    }

    async fn get_cart(&self, request: Request<GetCartRequest>) -> Result<Response<CartMessage>, Status> {
        require_user(&request, &request.get_ref().user_id, "read the cart")?;
        let user_id = request.into_inner().user_id;
        validate::required("user_id", &user_id)?;
        Ok(Response::new(to_proto(self.store.get(user_id).await?)))
    }

    async fn checkout(&self, request: Request<CheckoutRequest>) -> Result<Response<CheckoutResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        require_user_in(&metadata, &req.user_id, "check out the cart")?;
        validate::required("user_id", &req.user_id)?;
        let _one_at_a_time = self.checkouts.lock(&req.user_id).await;
        let order = checkout::checkout(&self.store, &self.peers, &self.settings, &metadata, req.user_id).await?;
        Ok(Response::new(CheckoutResponse { order: Some(order) }))
    }
}
