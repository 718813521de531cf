//! The shop under failure, as real processes: one of three catalog replicas
//! killed under steady load loses no read call, checkouts whose payment
//! responses are lost after the charge committed never charge twice, and a
//! checkout whose shopper walks away after a lost answer is finished (or
//! undone) by the cart by itself (on SQLite and on PostgreSQL).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use meshwork_proto::{
    cart::{self, cart_service_client::CartServiceClient},
    catalog::{self, catalog_service_client::CatalogServiceClient},
    payments::{ListOrdersRequest, payment_service_client::PaymentServiceClient},
    users::{self, user_service_client::UserServiceClient},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tonic::transport::Channel;

use crate::support::{
    http,
    mesh_process::{MeshProcess, pids, shop_config},
    postgres::Backend,
};

/// Rewrites the `[services.NAME]` header of a shop config to add `extra` lines.
fn add_to_service(config: &Path, name: &str, extra: &str) {
    let text = std::fs::read_to_string(config).expect("read config");
    let header = format!("[services.{name}]\n");
    assert!(text.contains(&header));
    std::fs::write(config, text.replace(&header, &format!("{header}{extra}\n"))).expect("write config");
}

async fn demo_channel(outbound_port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{outbound_port}"))
        .expect("uri")
        .connect_lazy()
}

/// Both backends' runs of the replica test use its ports, one at a time.
const REPLICAS_BASE: u16 = 28600;
static REPLICAS_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_catalog_replicas_under_load_fails_no_read_on_sqlite() {
    killing_one_of_three_catalog_replicas(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_catalog_replicas_under_load_fails_no_read_on_postgres() {
    killing_one_of_three_catalog_replicas(Backend::postgres("shop_replicas").await).await;
}

async fn killing_one_of_three_catalog_replicas(backend: Backend) {
    let _ports = REPLICAS_PORTS.lock().await;
    let on = backend.name();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), REPLICAS_BASE);
    // Replicas 1 and 2 of catalog listen 5 ports above the one before.
    std::fs::write(
        &config,
        backend.configure(
            &format!(
                "replica_port_step = 5\n{}",
                std::fs::read_to_string(&config).expect("read")
            ),
            "",
        ),
    )
    .expect("write");
    add_to_service(&config, "catalog", "replicas = 3");
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(120));
    let (victim_app, victim_proxy) = pids(&mesh.output(), "catalog-1");

    let channel = demo_channel(REPLICAS_BASE + 200).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for worker in 0..8u64 {
        let mut client = CatalogServiceClient::new(channel.clone());
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let result = if worker % 2 == 0 {
                    client
                        .get_product(catalog::GetProductRequest {
                            product_id: "book-ddia".into(),
                        })
                        .await
                        .map(drop)
                } else {
                    let request = catalog::ListProductsRequest {
                        page_size: 10,
                        ..Default::default()
                    };
                    client.list_products(request).await.map(drop)
                };
                match result {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        errors.push(format!("{:?}: {}", status.code(), status.message()));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        }));
    }

    // Steady load first (100 reads, however fast this machine is today), then
    // kill replica 1 (app and sidecar), then keep going for 3 s and 100 reads more.
    let steady = |calls: u64| {
        let ok = ok.clone();
        async move {
            let until = Instant::now() + Duration::from_secs(15);
            while ok.load(Ordering::Relaxed) < calls {
                assert!(
                    Instant::now() < until,
                    "no steady load: {} reads",
                    ok.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    steady(100).await;
    let before_kill = ok.load(Ordering::Relaxed);
    kill(Pid::from_raw(victim_app), Signal::SIGKILL).expect("kill catalog-1");
    kill(Pid::from_raw(victim_proxy), Signal::SIGKILL).expect("kill catalog-1-proxy");
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    steady(before_kill + 100).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for worker in workers {
        errors.extend(worker.await.expect("worker"));
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "[{on}] catalog replica killed under load: {ok} reads succeeded ({} after the kill, over {:?}), {failed} failed",
        ok - before_kill,
        killed_at.elapsed()
    );
    assert_eq!(failed, 0, "reads failed: {:?}", &errors[..errors.len().min(10)]);
    mesh.wait_for("mesh: catalog-1 was killed by SIGKILL", Duration::from_secs(10));
}

/// Both backends' runs of the lost-answers test use its ports, one at a time.
const LOST_ANSWERS_BASE: u16 = 29100;
static LOST_ANSWERS_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_payment_responses_never_charge_twice_on_sqlite() {
    lost_payment_responses_never_charge_twice(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_payment_responses_never_charge_twice_on_postgres() {
    lost_payment_responses_never_charge_twice(Backend::postgres("shop_lost_answers").await).await;
}

async fn lost_payment_responses_never_charge_twice(backend: Backend) {
    let _ports = LOST_ANSWERS_PORTS.lock().await;
    let began = Instant::now();
    let on = backend.name();
    let base = LOST_ANSWERS_BASE;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), base);
    let pristine = backend.configure(&std::fs::read_to_string(&config).expect("read config"), "");
    std::fs::write(&config, &pristine).expect("write config");
    // Every answer of payments to Charge is lost on the way back, after the
    // charge has committed: cart's sidecar sees UNAVAILABLE and retries (Charge
    // is IDEMPOTENT), in vain, and the shopper's checkout fails.
    add_to_service(
        &config,
        "payments",
        "faults = [{ methods = [\"Charge\"], abort = { percent = 100, status = \"UNAVAILABLE\", after_response = true } }]",
    );
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(120));

    let channel = demo_channel(base + 200).await;
    let mut users = UserServiceClient::new(channel.clone());
    let mut carts = CartServiceClient::new(channel);
    const SHOPPERS: usize = 4;
    let mut shoppers = Vec::new();
    for shopper in 0..SHOPPERS {
        let register = users::RegisterRequest {
            email: format!("shopper{shopper}@example.com"),
            password: "long enough password".into(),
            display_name: format!("Shopper {shopper}"),
        };
        let user = users
            .register(register)
            .await
            .expect("register")
            .into_inner()
            .user
            .expect("user");
        for (product, quantity) in [("book-ddia", 1), ("book-sre", 2)] {
            let item = cart::AddItemRequest {
                user_id: user.id.clone(),
                product_id: product.into(),
                quantity,
            };
            carts.add_item(item).await.expect("add item");
        }
        // The shopper presses "buy" twice; both charges commit, both answers are lost.
        for _ in 0..2 {
            let status = carts
                .checkout(cart::CheckoutRequest {
                    user_id: user.id.clone(),
                })
                .await
                .expect_err("the answer is lost");
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        }
        shoppers.push(user.id);
    }

    // The network heals (the sidecars reload mesh.toml), and each shopper
    // presses "buy" once more: the charge is replayed, not made again.
    std::fs::write(&config, &pristine).expect("restore config");
    for user_id in &shoppers {
        let deadline = Instant::now() + Duration::from_secs(10);
        let order = loop {
            match carts
                .checkout(cart::CheckoutRequest {
                    user_id: user_id.clone(),
                })
                .await
            {
                Ok(response) => break response.into_inner().order.expect("order"),
                // Until the sidecar has read the edited file, answers are still lost.
                Err(status) if status.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(status) => panic!("checkout after the fault was lifted: {status:?}"),
            }
        };
        assert_eq!(&order.user_id, user_id);
        // And once more after it went through: there is nothing left to buy.
        let again = carts
            .checkout(cart::CheckoutRequest {
                user_id: user_id.clone(),
            })
            .await;
        assert_eq!(
            again.expect_err("cart is empty").code(),
            tonic::Code::FailedPrecondition
        );
    }

    let payments_admin = format!("127.0.0.1:{}", base + 304);
    let (_, metrics) = http::get(payments_admin.parse().expect("payments admin"), "/metrics")
        .await
        .expect("metrics");
    let charges_served: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with(
                "meshwork_requests_total{direction=\"inbound\",peer=\"cart\",method=\"shop.payments.v1.PaymentService/Charge\"}",
            )
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    mesh.signal(Signal::SIGTERM);
    assert!(mesh.wait(Duration::from_secs(40)).success(), "{}", mesh.output());

    let db = backend.books(&dir.path().join(".mesh"), "payments").await;
    let orders = db.count("SELECT COUNT(*) FROM orders").await;
    let users_charged = db.count("SELECT COUNT(DISTINCT user_id) FROM orders").await;
    println!("[{on}] {SHOPPERS} shoppers: payments served {charges_served} charges and holds {orders} orders");
    // Each shopper's two failed checkouts reached payments at least twice
    // each (cart's sidecar retried), and the last one once more.
    assert!(
        charges_served >= (SHOPPERS * 5) as f64,
        "charges served: {charges_served}"
    );
    assert_eq!(orders, SHOPPERS as i64, "one order per shopper");
    assert_eq!(users_charged, SHOPPERS as i64);
    println!("[{on}] whole run: {:?}", began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_nobody_retries_are_finished_or_undone_by_the_cart_on_sqlite() {
    checkouts_nobody_retries_are_finished_or_undone(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_nobody_retries_are_finished_or_undone_by_the_cart_on_postgres() {
    checkouts_nobody_retries_are_finished_or_undone(Backend::postgres("shop_walked_away").await).await;
}

/// Two shoppers press "buy" once, lose the answer and walk away. Bea's charge
/// had committed: the cart's recovery confirms her order and empties her cart
/// once payments answers again. Al's reservation was made but its answer lost
/// before anything was charged: the recovery releases his units within seconds,
/// not when the catalog's one-minute hold runs out.
async fn checkouts_nobody_retries_are_finished_or_undone(backend: Backend) {
    let _ports = LOST_ANSWERS_PORTS.lock().await;
    let on = backend.name();
    let base = LOST_ANSWERS_BASE;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), base);
    let pristine = backend.configure(&std::fs::read_to_string(&config).expect("read config"), "");
    std::fs::write(&config, &pristine).expect("write config");
    // A checkout may run 2 s; the recovery takes one left open after 4 s.
    add_to_service(&config, "cart", "env = { MESH_CART_CHECKOUT_LIMIT = \"2s\" }");
    let with_recovery = std::fs::read_to_string(&config).expect("read config");
    let lost_charges = "faults = [{ methods = [\"Charge\"], abort = { percent = 100, status = \"UNAVAILABLE\", after_response = true } }]";
    add_to_service(&config, "payments", lost_charges);
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(120));

    let channel = demo_channel(base + 200).await;
    let mut users = UserServiceClient::new(channel.clone());
    let mut carts = CartServiceClient::new(channel.clone());
    let mut catalog = CatalogServiceClient::new(channel.clone());
    let mut payments = PaymentServiceClient::new(channel);
    let stock = async |catalog: &mut CatalogServiceClient<Channel>, id: &str| {
        let request = catalog::GetProductRequest { product_id: id.into() };
        catalog
            .get_product(request)
            .await
            .expect("get product")
            .into_inner()
            .stock
    };
    let ddia_before = stock(&mut catalog, "book-ddia").await;
    let sre_before = stock(&mut catalog, "book-sre").await;
    let mut shopper = async |name: &str, product: &str| {
        let register = users::RegisterRequest {
            email: format!("{name}@example.com"),
            password: "long enough password".into(),
            display_name: name.into(),
        };
        let user = users
            .register(register)
            .await
            .expect("register")
            .into_inner()
            .user
            .expect("user");
        let item = cart::AddItemRequest {
            user_id: user.id.clone(),
            product_id: product.into(),
            quantity: 1,
        };
        carts.add_item(item).await.expect("add item");
        user.id
    };
    let bea = shopper("bea", "book-ddia").await;
    let al = shopper("al", "book-sre").await;
    let checkout = async |carts: &mut CartServiceClient<Channel>, user_id: &str| {
        let request = cart::CheckoutRequest {
            user_id: user_id.into(),
        };
        let status = carts.checkout(request).await.expect_err("the answer is lost");
        assert!(
            matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded),
            "{status:?}"
        );
    };
    // Bea's charge commits; its answer is lost.
    checkout(&mut carts, &bea).await;

    // Now the catalog's answers to ReserveStock are lost too (once its
    // sidecar has read the file: a probe reservation tells), and Al checks out.
    let lost_reservations = "faults = [{ methods = [\"ReserveStock\"], abort = { percent = 100, status = \"UNAVAILABLE\", after_response = true } }]";
    add_to_service(&config, "catalog", lost_reservations);
    let deadline = Instant::now() + Duration::from_secs(15);
    for probe in 0.. {
        let request = catalog::ReserveStockRequest {
            reservation_id: format!("probe-{probe}"),
            items: vec![catalog::StockItem {
                product_id: "book-pragmatic".into(),
                quantity: 1,
            }],
            hold_seconds: 1,
        };
        match catalog.reserve_stock(request).await {
            Err(status) if status.code() == tonic::Code::Unavailable => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("the catalog's fault never took hold: {other:?}"),
        }
    }
    checkout(&mut carts, &al).await;
    let walked_away = Instant::now();
    assert_eq!(
        stock(&mut catalog, "book-sre").await,
        sre_before - 1,
        "Al's unit is held"
    );

    // Al's hold is released by the recovery (ReleaseReservation is not
    // faulted), long before the catalog's 60 s hold would end.
    let released = loop {
        if stock(&mut catalog, "book-sre").await == sre_before {
            break walked_away.elapsed();
        }
        assert!(
            walked_away.elapsed() < Duration::from_secs(30),
            "Al's units were never released"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("[{on}] a reservation whose answer was lost was released after {released:?}");
    assert!(released < Duration::from_secs(20), "{released:?}");

    // The network heals: Bea's checkout is finished without her.
    std::fs::write(&config, &with_recovery).expect("heal");
    let healed = Instant::now();
    let finished = loop {
        let request = cart::GetCartRequest { user_id: bea.clone() };
        if carts
            .get_cart(request)
            .await
            .expect("get cart")
            .into_inner()
            .items
            .is_empty()
        {
            break healed.elapsed();
        }
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "Bea's checkout was never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("[{on}] a charge whose answer was lost was settled {finished:?} after payments answered again");
    let orders = |user_id: &str| ListOrdersRequest {
        user_id: user_id.into(),
    };
    let beas = payments
        .list_orders(orders(&bea))
        .await
        .expect("orders")
        .into_inner()
        .orders;
    assert_eq!(beas.len(), 1, "one order for Bea");
    assert!(
        payments
            .list_orders(orders(&al))
            .await
            .expect("orders")
            .into_inner()
            .orders
            .is_empty()
    );
    assert_eq!(
        stock(&mut catalog, "book-ddia").await,
        ddia_before - 1,
        "Bea's unit is sold"
    );
    assert_eq!(stock(&mut catalog, "book-sre").await, sre_before, "Al's unit is back");
    let request = cart::GetCartRequest { user_id: al.clone() };
    assert_eq!(
        carts
            .get_cart(request)
            .await
            .expect("get cart")
            .into_inner()
            .items
            .len(),
        1,
        "Al's cart is as it was"
    );

    mesh.signal(Signal::SIGTERM);
    assert!(mesh.wait(Duration::from_secs(40)).success(), "{}", mesh.output());
    let db = backend.books(&dir.path().join(".mesh"), "payments").await;
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 1, "one charge in all");
    let carts_db = backend.books(&dir.path().join(".mesh"), "cart").await;
    assert_eq!(
        carts_db
            .count("SELECT COUNT(*) FROM checkouts WHERE state = 'open'")
            .await,
        0,
        "no checkout left open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_catalog_in_mesh_toml_starts_and_stops_replicas_that_take_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), 29600);
    let text = format!(
        "replica_port_step = 5\n{}",
        std::fs::read_to_string(&config).expect("read")
    );
    std::fs::write(&config, &text).expect("write");
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(120));
    let (first_app, first_proxy) = pids(&mesh.output(), "catalog");

    // Scale up to three: the launcher starts replicas 1 and 2 with their sidecars.
    let scaled = |replicas: u16| {
        text.replace(
            "[services.catalog]\n",
            &format!("[services.catalog]\nreplicas = {replicas}\n"),
        )
    };
    std::fs::write(&config, scaled(3)).expect("scale up");
    mesh.wait_for("started catalog-2 ", Duration::from_secs(10));
    // Catalog's admin port is 29902; replica k's is 5k above it.
    for admin in [29907, 29912] {
        http::wait_ready(format!("127.0.0.1:{admin}").parse().expect("admin")).await;
    }

    // Back down to two: replica 2 is stopped.
    std::fs::write(&config, scaled(2)).expect("scale down");
    mesh.wait_for("stopping catalog-2, catalog-2-proxy", Duration::from_secs(10));

    // The demo's sidecar reads mesh.toml on its own schedule (every second):
    // read until replica 1 has served one, which shows the edit reached it.
    let replica_1_admin = "127.0.0.1:29907".parse().expect("admin");
    let served_demo = |metrics: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with("meshwork_requests_total{direction=\"inbound\",peer=\"demo\""))
    };
    let mut catalog = CatalogServiceClient::new(demo_channel(29800).await);
    let read = || catalog::GetProductRequest {
        product_id: "book-ddia".into(),
    };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        catalog.get_product(read()).await.expect("read with every replica up");
        let (_, metrics) = http::get(replica_1_admin, "/metrics").await.expect("metrics");
        if served_demo(&metrics) {
            break;
        }
        assert!(
            Instant::now() < until,
            "replica 1 served no read within 10 s:\n{metrics}"
        );
    }

    // With the original replica gone, every read is served by the one the edit added.
    kill(Pid::from_raw(first_app), Signal::SIGKILL).expect("kill catalog");
    kill(Pid::from_raw(first_proxy), Signal::SIGKILL).expect("kill catalog-proxy");
    for _ in 0..50 {
        catalog.get_product(read()).await.expect("read served by replica 1");
    }
}
