//! Payments over a real loopback socket: charges, replays (sequential and racing),
//! a reused key with other contents, look-ups and refunds.

use meshwork_proto::{
    common::Money,
    payments::{
        ChargeRequest, GetOrderRequest, ListOrdersRequest, OrderLine, OrderStatus, RefundRequest,
        payment_service_client::PaymentServiceClient,
    },
};
use meshwork_service_kit::{db::sqlx, testing::TestServer};
use sqlx::Connection;
use tonic::{Code, transport::Channel};

struct Fixture {
    client: PaymentServiceClient<Channel>,
    dir: tempfile::TempDir,
    _server: TestServer,
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    // The catalog shares the server, which stands in for payments' sidecar.
    let (listener, addr) = TestServer::listener().await.expect("listener");
    let service = meshwork_payments::service(dir.path(), addr).await.expect("service");
    let catalog = meshwork_catalog::service(dir.path()).await.expect("catalog");
    let routes = tonic::service::Routes::new(service).add_service(catalog);
    let server = TestServer::start_on(listener, routes, &[meshwork_payments::GRPC_SERVICE]).expect("server");
    Fixture {
        client: PaymentServiceClient::new(server.channel()),
        dir,
        _server: server,
    }
}

impl Fixture {
    async fn order_rows(&self) -> i64 {
        let path = self.dir.path().join("payments.db");
        let mut db = sqlx::SqliteConnection::connect_with(&sqlx::sqlite::SqliteConnectOptions::new().filename(path))
            .await
            .expect("open db");
        sqlx::query_scalar("SELECT COUNT(*) FROM orders")
            .fetch_one(&mut db)
            .await
            .expect("count")
    }
}

fn usd(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency_code: "USD".into(),
    })
}

fn charge(key: &str, user: &str) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: key.into(),
        user_id: user.into(),
        lines: vec![
            OrderLine {
                product_id: "book-ddia".into(),
                name: "DDIA".into(),
                quantity: 2,
                unit_price: usd(4799),
            },
            OrderLine {
                product_id: "toys-kite".into(),
                name: "Kite".into(),
                quantity: 1,
                unit_price: usd(3450),
            },
        ],
        total: usd(2 * 4799 + 3450),
    }
}

#[tokio::test]
async fn charge_get_list_and_refund() {
    let mut f = start().await;
    let first = f
        .client
        .charge(charge("key-1", "user-a"))
        .await
        .expect("charge")
        .into_inner();
    assert!(!first.replayed);
    let order = first.order.expect("order");
    assert_eq!(order.status, OrderStatus::Paid as i32);
    assert_eq!(order.total, usd(13048));
    assert_eq!(order.lines.len(), 2);
    assert_eq!(order.idempotency_key, "key-1");
    assert!(order.refunded_at.is_none());

    let got = f
        .client
        .get_order(GetOrderRequest {
            order_id: order.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, order);

    let second = f
        .client
        .charge(charge("key-2", "user-a"))
        .await
        .expect("charge")
        .into_inner()
        .order
        .expect("order");
    f.client.charge(charge("key-3", "user-b")).await.expect("other user");
    let list = f
        .client
        .list_orders(ListOrdersRequest {
            user_id: "user-a".into(),
        })
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<&str> = list.orders.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(
        ids,
        [second.id.as_str(), order.id.as_str()],
        "newest first, only this user's"
    );

    let refunded = f
        .client
        .refund(RefundRequest {
            order_id: order.id.clone(),
        })
        .await
        .expect("refund")
        .into_inner();
    assert_eq!(refunded.status, OrderStatus::Refunded as i32);
    assert!(refunded.refunded_at.is_some());
    let again = f
        .client
        .refund(RefundRequest {
            order_id: order.id.clone(),
        })
        .await
        .expect("refund twice")
        .into_inner();
    assert_eq!(again, refunded, "a second refund changes nothing");

    let err = f
        .client
        .refund(RefundRequest {
            order_id: "nope".into(),
        })
        .await
        .expect_err("unknown order");
    assert_eq!(err.code(), Code::NotFound);
    let err = f
        .client
        .get_order(GetOrderRequest {
            order_id: "nope".into(),
        })
        .await
        .expect_err("unknown order");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("nope"));
    assert_eq!(f.order_rows().await, 3);
}

#[tokio::test]
async fn a_replayed_charge_returns_the_first_order_and_a_changed_one_is_refused() {
    let mut f = start().await;
    let first = f
        .client
        .charge(charge("key-1", "user-a"))
        .await
        .expect("charge")
        .into_inner();
    let replay = f
        .client
        .charge(charge("key-1", "user-a"))
        .await
        .expect("replay")
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.order, first.order);
    assert_eq!(f.order_rows().await, 1);

    let err = f
        .client
        .charge(charge("key-1", "user-b"))
        .await
        .expect_err("other user, same key");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("key-1"), "{}", err.message());
    let mut cheaper = charge("key-1", "user-a");
    cheaper.lines.truncate(1);
    cheaper.total = usd(2 * 4799);
    let err = f.client.charge(cheaper).await.expect_err("other total, same key");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(f.order_rows().await, 1);
}

#[tokio::test]
async fn racing_charges_with_one_key_make_one_order() {
    let f = start().await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let mut client = f.client.clone();
            tokio::spawn(async move { client.charge(charge("race", "user-a")).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task").expect("charge"));
    }
    let id = results[0].order.as_ref().expect("order").id.clone();
    assert!(results.iter().all(|r| r.order.as_ref().is_some_and(|o| o.id == id)));
    assert_eq!(
        results.iter().filter(|r| !r.replayed).count(),
        1,
        "exactly one charge was new"
    );
    assert_eq!(f.order_rows().await, 1);
}

#[tokio::test]
async fn invalid_charges_are_refused_with_the_reason() {
    let mut f = start().await;
    let cases: Vec<(ChargeRequest, &str)> = vec![
        (charge("", "user-a"), "idempotency_key"),
        (charge(&"k".repeat(129), "user-a"), "idempotency_key"),
        (charge("k", ""), "user_id"),
        (
            ChargeRequest {
                lines: vec![],
                total: usd(0),
                ..charge("k", "user-a")
            },
            "lines",
        ),
        (
            {
                let mut c = charge("k", "user-a");
                c.lines[0].quantity = -1;
                c
            },
            "quantity must be at least 1",
        ),
        (
            {
                let mut c = charge("k", "user-a");
                c.total = usd(1);
                c
            },
            "add up to 13048",
        ),
        (
            {
                let mut c = charge("k", "user-a");
                c.lines[1].unit_price = Some(Money {
                    amount_minor: 3450,
                    currency_code: "EUR".into(),
                });
                c
            },
            "one currency",
        ),
    ];
    for (request, want) in cases {
        let err = f.client.charge(request).await.expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument, "{want}");
        assert!(err.message().contains(want), "{want}: {}", err.message());
    }
    let err = f
        .client
        .list_orders(ListOrdersRequest::default())
        .await
        .expect_err("no user");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(f.order_rows().await, 0);
}
