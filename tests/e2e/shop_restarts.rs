//! Apps that come back, as real processes: `mesh up` restarts a killed app.
//! A catalog replica killed under read load is back and ready within a few
//! seconds while no read fails (its sidecar answers UNAVAILABLE meanwhile and
//! the caller's sidecar retries on the other replica); and a cart killed in the
//! middle of a checkout comes back, the retried checkout leaving one order, one
//! charge and the right stock. On SQLite and on PostgreSQL.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use meshwork_proto::{
    cart::{self, cart_service_client::CartServiceClient},
    catalog::{self, catalog_service_client::CatalogServiceClient},
    users::{self, user_service_client::UserServiceClient},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tonic::{Code, transport::Channel};

use crate::support::{
    http,
    mesh_process::{MeshProcess, pids, shop_config},
    postgres::Backend,
};

/// Both backends' runs use these ports, one run at a time.
const BASE: u16 = 31100;
static PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_apps_come_back_and_the_books_still_agree_on_sqlite() {
    killed_apps_come_back(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_apps_come_back_and_the_books_still_agree_on_postgres() {
    killed_apps_come_back(Backend::postgres("shop_restarts").await).await;
}

async fn killed_apps_come_back(backend: Backend) {
    let _ports = PORTS.lock().await;
    let began = Instant::now();
    let on = backend.name();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), BASE);
    let text = backend
        .configure(
            &format!(
                "replica_port_step = 5\n{}",
                std::fs::read_to_string(&config).expect("read")
            ),
            "",
        )
        .replace("[services.catalog]\n", "[services.catalog]\nreplicas = 2\n")
    // Each charge waits a moment on the way, so a checkout can be caught midway.
    .replace(
        "[services.payments]\n",
        "[services.payments]\nfaults = [{ methods = [\"Charge\"], delay = { percent = 100, duration = \"1500ms\" } }]\n",
    );
    std::fs::write(&config, text).expect("write config");
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(120));
    let output = mesh.output();
    let (catalog_1, _) = pids(&output, "catalog-1");
    let (cart_app, _) = pids(&output, "cart");
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", BASE + 200))
        .expect("uri")
        .connect_lazy();

    // Steady reads; kill catalog-1's app (its sidecar stays).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut client = CatalogServiceClient::new(channel.clone());
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let read = catalog::GetProductRequest {
                    product_id: "book-ddia".into(),
                };
                match client.get_product(read).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        errors.push(format!("{:?}: {}", status.code(), status.message()));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        }));
    }
    let until = Instant::now() + Duration::from_secs(10);
    while ok.load(Ordering::Relaxed) < 100 {
        assert!(Instant::now() < until, "no steady load");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(Pid::from_raw(catalog_1), Signal::SIGKILL).expect("kill catalog-1");
    let killed = Instant::now();
    mesh.wait_for(
        "mesh: catalog-1 was killed by SIGKILL; restarting it",
        Duration::from_secs(5),
    );
    mesh.wait_for("mesh: restarted catalog-1", Duration::from_secs(5));
    // Replica 1's admin port: catalog's (BASE + 302) plus one replica step.
    http::wait_ready(format!("127.0.0.1:{}", BASE + 307).parse().expect("admin")).await;
    let back = killed.elapsed();
    let served_before = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < served_before + 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for worker in workers {
        errors.extend(worker.await.expect("worker"));
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "[{on}] catalog-1 killed under load: back and ready after {back:?}; {ok} reads succeeded, {failed} failed"
    );
    assert!(back < Duration::from_secs(5), "back after {back:?}");
    assert_eq!(failed, 0, "reads failed: {:?}", &errors[..errors.len().min(10)]);

    // A checkout caught while its charge is on the way: cart is killed.
    let user = UserServiceClient::new(channel.clone())
        .register(users::RegisterRequest {
            email: "midway@example.com".into(),
            password: "long enough password".into(),
            display_name: "Midway".into(),
        })
        .await
        .expect("register")
        .into_inner()
        .user
        .expect("user")
        .id;
    let mut carts = CartServiceClient::new(channel.clone());
    carts
        .add_item(cart::AddItemRequest {
            user_id: user.clone(),
            product_id: "book-sre".into(),
            quantity: 2,
        })
        .await
        .expect("add");
    let state = dir.path().join(".mesh");
    let catalog_db = backend.books(&state, "catalog").await;
    let payments_db = backend.books(&state, "payments").await;
    let stock = || catalog_db.stock("book-sre");
    let before = stock().await;
    let checkout = || cart::CheckoutRequest { user_id: user.clone() };
    let first = tokio::spawn({
        let mut carts = carts.clone();
        let request = checkout();
        async move { carts.checkout(request).await }
    });
    let until = Instant::now() + Duration::from_secs(10);
    while catalog_db
        .count("SELECT COUNT(*) FROM reservations WHERE status = 'HELD'")
        .await
        == 0
    {
        assert!(Instant::now() < until, "the checkout never reserved");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(Pid::from_raw(cart_app), Signal::SIGKILL).expect("kill cart");
    let killed = Instant::now();
    let lost = first.await.expect("task");
    mesh.wait_for("mesh: restarted cart ", Duration::from_secs(5));
    http::wait_ready(format!("127.0.0.1:{}", BASE + 303).parse().expect("admin")).await;
    let back = killed.elapsed();
    // The shopper presses "buy" again (their first answer was lost or failed).
    let until = Instant::now() + Duration::from_secs(15);
    let order = loop {
        match carts.checkout(checkout()).await {
            Ok(response) => break response.into_inner().order.expect("order"),
            Err(status) if status.code() == Code::FailedPrecondition && status.message() == "cart is empty" => {
                panic!("the killed checkout finished after all: {lost:?}")
            }
            Err(status) if Instant::now() < until => {
                println!("retrying the checkout after {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("checkout after cart came back: {status:?}"),
        }
    };
    let orders = payments_db.count("SELECT COUNT(*) FROM orders").await;
    println!(
        "[{on}] cart killed midway ({:?}): back and ready after {back:?}; retried checkout made order {}; {orders} orders, stock of book-sre {before} -> {}",
        lost.as_ref().map(drop).map_err(|s| s.code()),
        order.id,
        stock().await
    );
    assert_eq!(orders, 1, "one order, one charge");
    assert_eq!(stock().await, before - 2);
    assert_eq!(
        catalog_db
            .count("SELECT COUNT(*) FROM reservations WHERE status = 'HELD'")
            .await,
        0
    );
    drop(mesh);
    println!("[{on}] whole run: {:?}", began.elapsed());
}
