//! Stock reservations (the catalog's saga steps) over a real loopback socket, with
//! two catalog replicas sharing one database file as `mesh up` runs them: the last
//! units go to exactly as many reservations as there are units, every step is
//! idempotent, and a held reservation expires by itself.

use std::time::{Duration, Instant};

use meshwork_proto::catalog::{
    GetProductRequest, ReservationRequest, ReservationStatus, ReserveStockRequest, StockItem, UpdateProductRequest,
    catalog_service_client::CatalogServiceClient,
};
use meshwork_service_kit::testing::TestServer;
use tonic::{Code, transport::Channel};

async fn replica(dir: &std::path::Path) -> (CatalogServiceClient<Channel>, TestServer) {
    let service = meshwork_catalog::service(dir).await.expect("service");
    let server = TestServer::start(tonic::service::Routes::new(service), &[meshwork_catalog::GRPC_SERVICE])
        .await
        .expect("server");
    (CatalogServiceClient::new(server.channel()), server)
}

async fn stock(client: &mut CatalogServiceClient<Channel>, id: &str) -> i32 {
    let request = GetProductRequest { product_id: id.into() };
    client.get_product(request).await.expect("get").into_inner().stock
}

fn reserve(id: &str, product: &str, quantity: i32, hold_seconds: i32) -> ReserveStockRequest {
    ReserveStockRequest {
        reservation_id: id.into(),
        items: vec![StockItem {
            product_id: product.into(),
            quantity,
        }],
        hold_seconds,
    }
}

fn id(reservation_id: &str) -> ReservationRequest {
    ReservationRequest {
        reservation_id: reservation_id.into(),
    }
}

#[tokio::test]
async fn the_last_units_go_to_exactly_as_many_reservations_across_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, _sa) = replica(dir.path()).await;
    let (b, _sb) = replica(dir.path()).await;
    const UNITS: i32 = 3;
    const BUYERS: usize = 12;
    a.update_product(UpdateProductRequest {
        product_id: "elec-mouse".into(),
        price: None,
        stock: Some(UNITS),
    })
    .await
    .expect("set stock");
    let tasks: Vec<_> = (0..BUYERS)
        .map(|i| {
            let mut client = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                client
                    .reserve_stock(reserve(&format!("r{i}"), "elec-mouse", 1, 0))
                    .await
            })
        })
        .collect();
    let (mut held, mut short) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => held += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(status.message().contains("(elec-mouse)"), "{}", status.message());
                short += 1;
            }
        }
    }
    println!("{BUYERS} reservations for the last {UNITS} units over 2 replicas: {held} held, {short} short");
    assert_eq!((held, short), (UNITS, BUYERS as i32 - UNITS));
    assert_eq!(stock(&mut a, "elec-mouse").await, 0);
}

#[tokio::test]
async fn each_step_is_idempotent_and_a_held_reservation_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, _server) = replica(dir.path()).await;
    let before = stock(&mut c, "book-ddia").await;

    // Reserving twice under one key takes the units once.
    for _ in 0..2 {
        let r = c
            .reserve_stock(reserve("k1", "book-ddia", 2, 0))
            .await
            .expect("reserve");
        assert_eq!(r.into_inner().products[0].stock, before - 2);
    }
    let err = c
        .reserve_stock(reserve("k1", "book-ddia", 3, 0))
        .await
        .expect_err("other items");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Released twice: the units come back once. A retry may reserve anew.
    for _ in 0..2 {
        let r = c.release_reservation(id("k1")).await.expect("release").into_inner();
        assert_eq!(r.status, ReservationStatus::Released as i32);
        assert_eq!(stock(&mut c, "book-ddia").await, before);
    }
    c.reserve_stock(reserve("k1", "book-ddia", 2, 0))
        .await
        .expect("reserve anew");
    for _ in 0..2 {
        let r = c.confirm_reservation(id("k1")).await.expect("confirm").into_inner();
        assert_eq!(r.status, ReservationStatus::Confirmed as i32);
    }
    // Compensation never undoes a sale; a refund does, once.
    c.release_reservation(id("k1")).await.expect("release after confirm");
    assert_eq!(stock(&mut c, "book-ddia").await, before - 2);
    for _ in 0..2 {
        let r = c.return_stock(id("k1")).await.expect("return").into_inner();
        assert_eq!(r.status, ReservationStatus::Returned as i32);
        assert_eq!(stock(&mut c, "book-ddia").await, before);
    }
    let err = c.confirm_reservation(id("nope")).await.expect_err("unknown");
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "unknown reservation 'nope'")
    );
    let err = c
        .reserve_stock(reserve("k2", "book-ddia", 1, 601))
        .await
        .expect_err("long hold");
    assert_eq!(err.code(), Code::InvalidArgument);

    // A checkout that died after reserving: its one-second hold runs out.
    c.reserve_stock(reserve("k2", "book-ddia", 1, 1))
        .await
        .expect("reserve");
    assert_eq!(stock(&mut c, "book-ddia").await, before - 1);
    let reserved = Instant::now();
    while stock(&mut c, "book-ddia").await != before {
        assert!(reserved.elapsed() < Duration::from_secs(5), "the hold never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("a 1 s hold was released after {:?}", reserved.elapsed());
    let r = c
        .confirm_reservation(id("k2"))
        .await
        .expect("late confirm takes the units anew");
    assert_eq!(r.into_inner().status, ReservationStatus::Confirmed as i32);
    assert_eq!(stock(&mut c, "book-ddia").await, before - 1);
}
