//! The shop's books under concurrency, as real processes (`mesh up` with two
//! replicas of every service, each service's replicas sharing one database), on
//! SQLite and on PostgreSQL: a charge that fails after the reservation leaves
//! stock as it was; concurrent checkouts for the last units sell exactly those
//! units, the rest told which product is short; no replica ever answers
//! INTERNAL; a refund puts the units back; and the rows in the catalog's and
//! payments' databases agree with what the shoppers were told.

use std::time::{Duration, Instant};

use meshwork_proto::{
    cart::{self, cart_service_client::CartServiceClient},
    catalog::{self, catalog_service_client::CatalogServiceClient},
    payments::{self, payment_service_client::PaymentServiceClient},
    users::{self, user_service_client::UserServiceClient},
};
use tonic::{Code, transport::Channel};

use crate::support::{
    mesh_process::{MeshProcess, shop_config},
    postgres::Backend,
};

/// Both backends' runs use these ports, one run at a time.
const BASE: u16 = 30700;
static PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// The product that runs out, and how many units it has left.
const SCARCE: &str = "elec-mouse";
const LAST_UNITS: i32 = 3;
const SCARCE_BUYERS: usize = 12;
/// Shoppers buying a product with plenty of stock at the same moment.
const PLENTY: &str = "book-ddia";
const PLENTY_BUYERS: usize = 24;

async fn shopper(channel: &Channel, n: usize, product: &str) -> String {
    let register = users::RegisterRequest {
        email: format!("books{n}@example.com"),
        password: "long enough password".into(),
        display_name: format!("Shopper {n}"),
    };
    let user = UserServiceClient::new(channel.clone())
        .register(register)
        .await
        .expect("register")
        .into_inner()
        .user
        .expect("user")
        .id;
    let item = cart::AddItemRequest {
        user_id: user.clone(),
        product_id: product.into(),
        quantity: 1,
    };
    CartServiceClient::new(channel.clone())
        .add_item(item)
        .await
        .expect("add item");
    user
}

async fn checkout(channel: &Channel, user_id: &str) -> Result<cart::CheckoutResponse, tonic::Status> {
    let request = cart::CheckoutRequest {
        user_id: user_id.into(),
    };
    CartServiceClient::new(channel.clone())
        .checkout(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sell_exactly_the_stock_there_is_and_never_answer_internal_on_sqlite() {
    sell_exactly_the_stock_there_is(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sell_exactly_the_stock_there_is_and_never_answer_internal_on_postgres() {
    sell_exactly_the_stock_there_is(Backend::postgres("shop_books").await).await;
}

async fn sell_exactly_the_stock_there_is(backend: Backend) {
    let _ports = PORTS.lock().await;
    let began = Instant::now();
    let on = backend.name();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), BASE);
    let pristine = backend.configure(
        &format!(
            "replica_port_step = 5\n{}",
            std::fs::read_to_string(&config).expect("read")
        ),
        "replicas = 2",
    );
    // Payments declines every charge at first.
    let declining = pristine.replace(
        "[services.payments]\n",
        "[services.payments]\nfaults = [{ methods = [\"Charge\"], abort = { percent = 100, status = \"FAILED_PRECONDITION\" } }]\n",
    );
    std::fs::write(&config, &declining).expect("write config");
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(120));
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", BASE + 200))
        .expect("uri")
        .connect_lazy();
    let state = dir.path().join(".mesh");
    let catalog_db = backend.books(&state, "catalog").await;
    let payments_db = backend.books(&state, "payments").await;
    let orders = || payments_db.count("SELECT COUNT(*) FROM orders");

    // A charge failing after the reservation leaves stock as it was.
    let plenty_before = catalog_db.stock(PLENTY).await;
    let first = shopper(&channel, 0, PLENTY).await;
    let declined = checkout(&channel, &first).await.expect_err("declined");
    assert_eq!(declined.code(), Code::FailedPrecondition, "{declined:?}");
    assert!(declined.message().contains("charging"), "{declined:?}");
    assert_eq!(
        catalog_db.stock(PLENTY).await,
        plenty_before,
        "the reservation was released"
    );
    assert_eq!(orders().await, 0);
    println!("[{on}] declined charge: stock of {PLENTY} {plenty_before} before and after, 0 orders");

    // Payments takes charges again once its sidecar has read the edit; until
    // then each try is declined and released again.
    std::fs::write(&config, &pristine).expect("lift the fault");
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        match checkout(&channel, &first).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::FailedPrecondition && Instant::now() < until => {
                assert_eq!(catalog_db.stock(PLENTY).await, plenty_before, "released each time");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("checkout after the fault was lifted: {status:?}"),
        }
    }
    assert_eq!(catalog_db.stock(PLENTY).await, plenty_before - 1);

    // The last units of one product, and plenty of another, bought at once.
    CatalogServiceClient::new(channel.clone())
        .update_product(catalog::UpdateProductRequest {
            product_id: SCARCE.into(),
            price: None,
            stock: Some(LAST_UNITS),
        })
        .await
        .expect("set stock");
    let mut buyers = Vec::new();
    for n in 0..SCARCE_BUYERS + PLENTY_BUYERS {
        let product = if n < SCARCE_BUYERS { SCARCE } else { PLENTY };
        buyers.push((product, shopper(&channel, n + 1, product).await));
    }
    let plenty_before = catalog_db.stock(PLENTY).await;
    let started = Instant::now();
    let tasks: Vec<_> = buyers
        .into_iter()
        .map(|(product, user)| {
            let channel = channel.clone();
            tokio::spawn(async move { (product, checkout(&channel, &user).await) })
        })
        .collect();
    let (mut sold, mut short, mut plenty_sold, mut other) = (0, 0, 0, Vec::new());
    let mut scarce_orders = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (SCARCE, Ok(response)) => {
                sold += 1;
                scarce_orders.push(response.order.expect("order").id);
            }
            (_, Ok(_)) => plenty_sold += 1,
            (SCARCE, Err(s)) if s.code() == Code::FailedPrecondition && s.message().contains(SCARCE) => short += 1,
            (_, Err(s)) => other.push(format!("{:?}: {}", s.code(), s.message())),
        }
    }
    let internal = other.iter().filter(|e| e.starts_with("Internal")).count();
    println!(
        "[{on}] {} concurrent checkouts over 2 replicas of each service in {:?}: {sold} of {SCARCE_BUYERS} got the last {LAST_UNITS} units, {short} were told it is short, {plenty_sold} of {PLENTY_BUYERS} bought {PLENTY}; {} other errors ({internal} INTERNAL); {} orders",
        SCARCE_BUYERS + PLENTY_BUYERS,
        started.elapsed(),
        other.len(),
        orders().await
    );
    assert!(other.is_empty(), "errors: {other:?}");
    assert_eq!((sold, short), (LAST_UNITS, SCARCE_BUYERS as i32 - LAST_UNITS));
    assert_eq!(plenty_sold, PLENTY_BUYERS);
    assert_eq!(catalog_db.stock(SCARCE).await, 0, "sold out, never below");
    assert_eq!(catalog_db.stock(PLENTY).await, plenty_before - PLENTY_BUYERS as i64);
    assert_eq!(orders().await, 1 + i64::from(LAST_UNITS) + PLENTY_BUYERS as i64);
    let held = catalog_db
        .count("SELECT COUNT(*) FROM reservations WHERE status = 'HELD'")
        .await;
    assert_eq!(held, 0, "every reservation was confirmed or released");

    // A refund (by the back office, the demo identity) puts the unit back.
    let mut payments = PaymentServiceClient::new(channel.clone());
    for _ in 0..2 {
        let refund = payments::RefundRequest {
            order_id: scarce_orders[0].clone(),
        };
        payments.refund(refund).await.expect("refund");
        assert_eq!(catalog_db.stock(SCARCE).await, 1, "one unit back, once");
    }
    println!("[{on}] refunded one {SCARCE} order twice: stock 0 -> 1");
    drop(mesh);
    println!("[{on}] whole run: {:?}", began.elapsed());
}
