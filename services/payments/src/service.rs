//! The gRPC face of payments: validates requests, calls the store, and maps orders to
//! messages. A call on behalf of an end user reaches only that user's own orders.

use std::{net::SocketAddr, path::Path};

use meshwork_proto::{
    catalog::{ReservationRequest, catalog_service_client::CatalogServiceClient},
    common::Money,
    payments::{
        ChargeRequest, ChargeResponse, GetOrderRequest, ListOrdersRequest, ListOrdersResponse, Order, OrderLine,
        OrderStatus, RefundRequest, payment_service_server::PaymentService,
    },
};
use meshwork_service_kit::{
    end_user::{require_user, require_user_in},
    propagate::outbound,
    time::timestamp,
};
use tonic::{Code, Request, Response, Status, transport::Channel};

use crate::{
    NAME,
    db::{self, OrderRow, Store},
    validate,
};

/// The payments service over its store.
#[derive(Debug, Clone)]
pub struct Payments {
    store: Store,
    catalog: CatalogServiceClient<Channel>,
}

impl Payments {
    /// Opens (or creates) `payments.db` in `data_dir`; the catalog is reached
    /// through `sidecar`.
    pub async fn open(data_dir: &Path, sidecar: SocketAddr) -> anyhow::Result<Self> {
        Ok(Payments {
            store: Store::open(&meshwork_service_kit::db_path(data_dir, NAME)).await?,
            catalog: CatalogServiceClient::new(meshwork_service_kit::sidecar_channel(sidecar)),
        })
    }

    /// Puts a refunded order's units back: its idempotency key names the
    /// checkout's stock reservation. Idempotent in the catalog, so a refund
    /// retried after a failure returns them once. An order made before
    /// checkouts reserved stock has no reservation, and nothing to put back.
    async fn return_stock(&self, inbound: &tonic::metadata::MetadataMap, order: &OrderRow) -> Result<(), Status> {
        let request = ReservationRequest {
            reservation_id: order.idempotency_key.clone(),
        };
        match self.catalog.clone().return_stock(outbound(inbound, request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => {
                tracing::info!(order_id = %order.id, "refund: no stock reservation to return");
                Ok(())
            }
            Err(status) => Err(Status::new(
                status.code(),
                format!("refund: returning stock to the catalog: {}", status.message()),
            )),
        }
    }
}

fn to_proto(o: OrderRow) -> Order {
    let money = |amount_minor| {
        Some(Money {
            amount_minor,
            currency_code: o.currency.clone(),
        })
    };
    Order {
        lines: o
            .lines
            .iter()
            .map(|l| OrderLine {
                product_id: l.product_id.clone(),
                name: l.name.clone(),
                quantity: l.quantity,
                unit_price: money(l.unit_price_minor),
            })
            .collect(),
        total: money(o.total_minor),
        status: match o.status {
            db::Status::Paid => OrderStatus::Paid,
            db::Status::Refunded => OrderStatus::Refunded,
        } as i32,
        created_at: Some(timestamp(o.created_at_ms)),
        refunded_at: o.refunded_at_ms.map(timestamp),
        id: o.id,
        user_id: o.user_id,
        idempotency_key: o.idempotency_key,
    }
}

#[tonic::async_trait]
impl PaymentService for Payments {
    async fn charge(&self, request: Request<ChargeRequest>) -> Result<Response<ChargeResponse>, Status> {
        let charge = validate::charge(request.into_inner())?;
        let (order, replayed) = self.store.charge(charge).await?;
        if replayed {
            tracing::info!(order_id = %order.id, "charge replayed; returning the first result");
        } else {
            tracing::info!(order_id = %order.id, total = order.total_minor, currency = %order.currency, "charged");
        }
        Ok(Response::new(ChargeResponse {
            order: Some(to_proto(order)),
            replayed,
        }))
    }

    async fn get_order(&self, request: Request<GetOrderRequest>) -> Result<Response<Order>, Status> {
        let (metadata, _, req) = request.into_parts();
        validate::required("order_id", &req.order_id)?;
        let order = self.store.get(req.order_id).await?;
        require_user_in(&metadata, &order.user_id, "read the orders")?;
        Ok(Response::new(to_proto(order)))
    }

    async fn list_orders(&self, request: Request<ListOrdersRequest>) -> Result<Response<ListOrdersResponse>, Status> {
        require_user(&request, &request.get_ref().user_id, "read the orders")?;
        let user_id = request.into_inner().user_id;
        validate::required("user_id", &user_id)?;
        let orders = self.store.list(user_id).await?;
        Ok(Response::new(ListOrdersResponse {
            orders: orders.into_iter().map(to_proto).collect(),
        }))
    }

    async fn refund(&self, request: Request<RefundRequest>) -> Result<Response<Order>, Status> {
        let (metadata, _, req) = request.into_parts();
        let id = req.order_id;
        validate::required("order_id", &id)?;
        // Stock first: if the catalog cannot be reached the order stays PAID and
        // the refund can be retried; the other way round, a failure would leave
        // a refunded order whose units never came back.
        let order = self.store.get(id.clone()).await?;
        require_user_in(&metadata, &order.user_id, "refund the orders")?;
        self.return_stock(&metadata, &order).await?;
        let order = self.store.refund(id).await?;
        tracing::info!(order_id = %order.id, "refunded");
        Ok(Response::new(to_proto(order)))
    }
}
