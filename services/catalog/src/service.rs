//! The gRPC face of the catalog: validates requests, calls the store, and maps rows
//! to messages.

use meshwork_proto::{
    catalog::{
        BatchGetProductsRequest, BatchGetProductsResponse, GetProductRequest, ListProductsRequest,
        ListProductsResponse, Product, Reservation as ReservationMessage, ReservationRequest, ReservationStatus,
        ReserveStockRequest, ReserveStockResponse, StockItem, UpdateProductRequest, WatchProductsRequest,
        catalog_service_server::CatalogService,
    },
    common::Money,
};
use meshwork_service_kit::{context::context, time::timestamp};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    Error,
    db::{ProductRow, Store, Update},
    prices::{Pricing, Rates},
    stock::{self, Reservation},
    validate, watch,
};

/// The catalog service over its store.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Store,
    rates: std::sync::Arc<Rates>,
}

impl Catalog {
    /// Opens (creating and seeding if new) the products in `database`.
    pub async fn open(database: &meshwork_service_kit::Database) -> anyhow::Result<Self> {
        let store = Store::open(database).await?;
        stock::spawn_sweeper(store.clone());
        let rates = Rates::load(&store).await?;
        Ok(Catalog { store, rates })
    }

    /// How `request`'s caller is shown prices (the currency of its baggage).
    fn pricing<T>(&self, request: &Request<T>) -> Pricing {
        Pricing::new(self.rates.clone(), context(request).currency)
    }
}

pub(crate) fn to_proto(p: ProductRow) -> Product {
    Product {
        id: p.id,
        name: p.name,
        description: p.description,
        category: p.category,
        price: Some(Money {
            amount_minor: p.price_minor,
            currency_code: p.currency,
        }),
        stock: p.stock,
        updated_at: Some(timestamp(p.updated_at_ms)),
    }
}

fn reservation_to_proto(r: Reservation) -> ReservationMessage {
    let status = match r.status {
        stock::Status::Held => ReservationStatus::Held,
        stock::Status::Confirmed => ReservationStatus::Confirmed,
        stock::Status::Released => ReservationStatus::Released,
        stock::Status::Returned => ReservationStatus::Returned,
    };
    ReservationMessage {
        id: r.id,
        status: status as i32,
        items: r
            .items
            .into_iter()
            .map(|(product_id, quantity)| StockItem { product_id, quantity })
            .collect(),
    }
}

fn reservation_id(request: Request<ReservationRequest>) -> Result<String, Status> {
    let id = request.into_inner().reservation_id;
    validate::reservation_id(&id)?;
    Ok(id)
}

#[tonic::async_trait]
impl CatalogService for Catalog {
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let pricing = self.pricing(&request);
        let req = request.into_inner();
        let page_size = validate::page_size(req.page_size)?;
        let after = validate::decode_page_token(&req.page_token)?;
        // One row more than the page tells whether there is a next page.
        let mut rows = self.store.list(after, req.category, page_size + 1).await?;
        let next_page_token = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last()
                .map(|p| validate::encode_page_token(&p.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListProductsResponse {
            products: rows.into_iter().map(|row| pricing.show(row)).collect(),
            next_page_token,
        }))
    }

    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<Product>, Status> {
        let pricing = self.pricing(&request);
        let id = request.into_inner().product_id;
        validate::product_id(&id)?;
        let mut rows = self.store.get_many(vec![id]).await?;
        let row = rows.pop().ok_or_else(|| Status::internal("internal error"))?;
        Ok(Response::new(pricing.show(row)))
    }

    async fn batch_get_products(
        &self,
        request: Request<BatchGetProductsRequest>,
    ) -> Result<Response<BatchGetProductsResponse>, Status> {
        let pricing = self.pricing(&request);
        let ids = request.into_inner().product_ids;
        validate::product_ids(&ids)?;
        let rows = self.store.get_many(ids).await?;
        Ok(Response::new(BatchGetProductsResponse {
            products: rows.into_iter().map(|row| pricing.show(row)).collect(),
        }))
    }

    type WatchProductsStream = ReceiverStream<Result<meshwork_proto::catalog::ProductUpdate, Status>>;

    async fn watch_products(
        &self,
        request: Request<WatchProductsRequest>,
    ) -> Result<Response<Self::WatchProductsStream>, Status> {
        let pricing = self.pricing(&request);
        let ids = request.into_inner().product_ids;
        validate::product_ids(&ids)?;
        let updates = watch::start(&self.store, ids, pricing).await?;
        Ok(Response::new(ReceiverStream::new(updates)))
    }

    async fn update_product(&self, request: Request<UpdateProductRequest>) -> Result<Response<Product>, Status> {
        let req = request.into_inner();
        validate::product_id(&req.product_id)?;
        if req.price.is_none() && req.stock.is_none() {
            return Err(Error::invalid("update", "must set price, stock or both").into());
        }
        if let Some(price) = &req.price {
            validate::price(price.amount_minor, &price.currency_code)?;
        }
        if let Some(stock) = req.stock {
            validate::stock(stock)?;
        }
        let update = Update {
            price: req.price.map(|m| (m.amount_minor, m.currency_code)),
            stock: req.stock,
        };
        let row = self.store.update(req.product_id, update).await?;
        tracing::info!(product_id = %row.id, price = row.price_minor, stock = row.stock, "product updated");
        Ok(Response::new(to_proto(row)))
    }

    async fn reserve_stock(
        &self,
        request: Request<ReserveStockRequest>,
    ) -> Result<Response<ReserveStockResponse>, Status> {
        // The prices the cart charges: in the shopper's currency.
        let pricing = self.pricing(&request);
        let req = request.into_inner();
        validate::reservation_id(&req.reservation_id)?;
        let items: stock::Items = req.items.into_iter().map(|i| (i.product_id, i.quantity)).collect();
        validate::stock_items(&items)?;
        let hold_ms = validate::hold_ms(req.hold_seconds)?;
        let (reservation, products) = self.store.reserve(req.reservation_id, items, hold_ms).await?;
        tracing::info!(reservation = %reservation.id, status = ?reservation.status, "stock reserved");
        Ok(Response::new(ReserveStockResponse {
            reservation: Some(reservation_to_proto(reservation)),
            products: products.into_iter().map(|row| pricing.show(row)).collect(),
        }))
    }

    async fn confirm_reservation(
        &self,
        request: Request<ReservationRequest>,
    ) -> Result<Response<ReservationMessage>, Status> {
        let reservation = self.store.confirm(reservation_id(request)?).await?;
        tracing::info!(reservation = %reservation.id, "stock reservation confirmed");
        Ok(Response::new(reservation_to_proto(reservation)))
    }

    async fn release_reservation(
        &self,
        request: Request<ReservationRequest>,
    ) -> Result<Response<ReservationMessage>, Status> {
        let reservation = self.store.release(reservation_id(request)?).await?;
        tracing::info!(reservation = %reservation.id, status = ?reservation.status, "stock reservation released");
        Ok(Response::new(reservation_to_proto(reservation)))
    }

    async fn return_stock(&self, request: Request<ReservationRequest>) -> Result<Response<ReservationMessage>, Status> {
        let reservation = self.store.return_stock(reservation_id(request)?).await?;
        tracing::info!(reservation = %reservation.id, "stock returned after a refund");
        Ok(Response::new(reservation_to_proto(reservation)))
    }
}
