//! Races on the shop's stores, with two replicas of a service serving on real
//! sockets in this process and sharing one database, on SQLite and on PostgreSQL:
//! charges racing with one idempotency key make one order; reservations racing
//! with one id take the units once; reservations of the same products in
//! opposite orders never deadlock; confirms racing releases of the same
//! reservations end sold with the stock taken once.

use std::{net::SocketAddr, time::Instant};

use meshwork_proto::{
    catalog::{
        GetProductRequest, ReservationRequest, ReservationStatus, ReserveStockRequest, StockItem,
        catalog_service_client::CatalogServiceClient,
    },
    common::Money,
    payments::{ChargeRequest, OrderLine, payment_service_client::PaymentServiceClient},
};
use meshwork_service_kit::{Database, testing::TestServer};
use tonic::{service::Routes, transport::Channel};

use crate::support::postgres::Backend;

/// Payments only dials its sidecar for refunds, which these tests never make.
const NO_SIDECAR: &str = "127.0.0.1:9";

async fn payments(database: &Database) -> (PaymentServiceClient<Channel>, TestServer) {
    let sidecar: SocketAddr = NO_SIDECAR.parse().expect("addr");
    let service = meshwork_payments::service_with(database, sidecar)
        .await
        .expect("payments");
    let server = TestServer::start(Routes::new(service), &[]).await.expect("server");
    (PaymentServiceClient::new(server.channel()), server)
}

async fn catalog(database: &Database) -> (CatalogServiceClient<Channel>, TestServer) {
    let service = meshwork_catalog::service_with(database).await.expect("catalog");
    let server = TestServer::start(Routes::new(service), &[]).await.expect("server");
    (CatalogServiceClient::new(server.channel()), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_charges_and_reservations_on_two_replicas_on_sqlite() {
    races(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_charges_and_reservations_on_two_replicas_on_postgres() {
    races(Backend::postgres("shop_races").await).await;
}

async fn races(backend: Backend) {
    let began = Instant::now();
    let on = backend.name();
    let dir = tempfile::tempdir().expect("tempdir");
    one_key_one_order(&backend.database(dir.path(), "payments"), on).await;
    reservations(&backend.database(dir.path(), "catalog"), on).await;
    println!("[{on}] races: {:?}", began.elapsed());
}

async fn one_key_one_order(database: &Database, on: &str) {
    // Both replicas open (and migrate) the database at the same moment.
    let ((a, _sa), (b, _sb)) = tokio::join!(payments(database), payments(database));
    // A build that knows fewer of payments' migrations keeps its hands off.
    let older = meshwork_service_kit::db::open(database, "payments", &[]).await;
    let refused = older.expect_err("a newer schema is refused").to_string();
    assert!(
        refused.ends_with("has schema version 1 for payments, newer than this build knows (0); refusing to touch it"),
        "{refused}"
    );
    let usd = |amount_minor| {
        Some(Money {
            amount_minor,
            currency_code: "USD".into(),
        })
    };
    let charge = ChargeRequest {
        idempotency_key: "one-key".into(),
        user_id: "racer".into(),
        lines: vec![OrderLine {
            product_id: "book-ddia".into(),
            name: "DDIA".into(),
            quantity: 1,
            unit_price: usd(4799),
        }],
        total: usd(4799),
    };
    const CHARGES: usize = 16;
    let tasks: Vec<_> = (0..CHARGES)
        .map(|i| {
            let mut client = if i.is_multiple_of(2) { a.clone() } else { b.clone() };
            let charge = charge.clone();
            tokio::spawn(async move { client.charge(charge).await.map(tonic::Response::into_inner) })
        })
        .collect();
    let (mut ids, mut fresh) = (Vec::new(), 0);
    for task in tasks {
        let response = task.await.expect("task").expect("every charge succeeds");
        fresh += usize::from(!response.replayed);
        ids.push(response.order.expect("order").id);
    }
    ids.dedup();
    println!("[{on}] {CHARGES} charges with one key over 2 payments replicas: {fresh} charged, the rest replayed");
    assert_eq!(ids.len(), 1, "every charge answered with the same order");
    assert_eq!(fresh, 1, "one charge made the order");
}

fn reserve(id: &str, items: &[&str]) -> ReserveStockRequest {
    ReserveStockRequest {
        reservation_id: id.into(),
        items: items
            .iter()
            .map(|product| StockItem {
                product_id: (*product).into(),
                quantity: 1,
            })
            .collect(),
        hold_seconds: 0,
    }
}

async fn stock(client: &mut CatalogServiceClient<Channel>, id: &str) -> i32 {
    let request = GetProductRequest { product_id: id.into() };
    client.get_product(request).await.expect("get").into_inner().stock
}

async fn reservations(database: &Database, on: &str) {
    let ((a, _sa), (b, _sb)) = tokio::join!(catalog(database), catalog(database));
    let replica = |i: usize| if i.is_multiple_of(2) { a.clone() } else { b.clone() };
    let mut reader = a.clone();
    let (scale, seeds) = ("kitchen-scale", "garden-seeds");

    // What a read costs on this backend (a figure, printed): one after another.
    const READS: u32 = 300;
    let started = Instant::now();
    for _ in 0..READS {
        stock(&mut reader, scale).await;
    }
    println!(
        "[{on}] {READS} reads one after another: {:?} each",
        started.elapsed() / READS
    );

    let (scale_before, seeds_before) = (stock(&mut reader, scale).await, stock(&mut reader, seeds).await);

    // One id reserved ten times at once: the units are taken once.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let mut client = replica(i);
            tokio::spawn(async move { client.reserve_stock(reserve("same-id", &[scale])).await })
        })
        .collect();
    for task in tasks {
        let reservation = task.await.expect("task").expect("reserve").into_inner();
        assert_eq!(reservation.reservation.expect("reservation").id, "same-id");
    }
    assert_eq!(stock(&mut reader, scale).await, scale_before - 1, "one id, one hold");

    // Twenty checkouts of both products, half listing them the other way round.
    const OPPOSITE: usize = 20;
    let tasks: Vec<_> = (0..OPPOSITE)
        .map(|i| {
            let mut client = replica(i);
            let items = if i.is_multiple_of(2) {
                [scale, seeds]
            } else {
                [seeds, scale]
            };
            tokio::spawn(async move { client.reserve_stock(reserve(&format!("both-{i}"), &items)).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("no deadlock, no error");
    }
    let taken = OPPOSITE as i32;
    assert_eq!(stock(&mut reader, scale).await, scale_before - 1 - taken);
    assert_eq!(stock(&mut reader, seeds).await, seeds_before - taken);

    // Each of those confirmed on one replica while the other releases it: a
    // release that comes first is undone by the confirm, which takes the units
    // anew, so every one ends sold and the stock is taken once per checkout.
    let tasks: Vec<_> = (0..OPPOSITE)
        .flat_map(|i| {
            let id = format!("both-{i}");
            let (mut confirm, mut release) = (replica(i), replica(i + 1));
            let request = ReservationRequest { reservation_id: id };
            let again = request.clone();
            [
                tokio::spawn(async move { confirm.confirm_reservation(request).await.map(drop) }),
                tokio::spawn(async move { release.release_reservation(again).await.map(drop) }),
            ]
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("confirm and release both succeed");
    }
    for i in 0..OPPOSITE {
        let request = ReservationRequest {
            reservation_id: format!("both-{i}"),
        };
        let status = reader
            .confirm_reservation(request)
            .await
            .expect("confirm")
            .into_inner()
            .status;
        assert_eq!(status, ReservationStatus::Confirmed as i32);
    }
    assert_eq!(stock(&mut reader, scale).await, scale_before - 1 - taken);
    assert_eq!(stock(&mut reader, seeds).await, seeds_before - taken);
    println!(
        "[{on}] 10 reservations racing with one id, {OPPOSITE} with opposite item orders and {OPPOSITE} confirms racing releases over 2 catalog replicas: stock exact, no error"
    );
}
