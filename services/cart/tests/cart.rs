//! The cart against real users, catalog and payments services. Those three share ONE
//! server, standing in for the sidecar's outbound port: tonic routes by gRPC path, as
//! the sidecar does. The cart is pointed at it as its sidecar.

use std::net::SocketAddr;

use meshwork_proto::{
    cart::{
        AddItemRequest, CheckoutRequest, GetCartRequest, RemoveItemRequest, cart_service_client::CartServiceClient,
    },
    catalog::{
        BatchGetProductsRequest, GetProductRequest, UpdateProductRequest, catalog_service_client::CatalogServiceClient,
    },
    payments::{ListOrdersRequest, OrderStatus, RefundRequest, payment_service_client::PaymentServiceClient},
    users::{RegisterRequest, user_service_client::UserServiceClient},
};
use meshwork_service_kit::testing::TestServer;
use tonic::{Code, service::Routes, transport::Channel};

struct Mesh {
    cart: CartServiceClient<Channel>,
    users: UserServiceClient<Channel>,
    catalog: CatalogServiceClient<Channel>,
    payments: PaymentServiceClient<Channel>,
    _servers: (TestServer, TestServer),
    _dir: tempfile::TempDir,
}

async fn start() -> Mesh {
    let dir = tempfile::tempdir().expect("tempdir");
    // Payments' sidecar is the same server: a refund calls the catalog there.
    let (listener, addr) = TestServer::listener().await.expect("listener");
    let routes = Routes::new(meshwork_users::service(dir.path()).await.expect("users"))
        .add_service(meshwork_catalog::service(dir.path()).await.expect("catalog"))
        .add_service(meshwork_payments::service(dir.path(), addr).await.expect("payments"));
    let peers = TestServer::start_on(
        listener,
        routes,
        &[
            meshwork_users::GRPC_SERVICE,
            meshwork_catalog::GRPC_SERVICE,
            meshwork_payments::GRPC_SERVICE,
        ],
    )
    .expect("peer server");
    let cart = cart_server(dir.path(), peers.addr).await;
    let channel = peers.channel();
    Mesh {
        cart: CartServiceClient::new(cart.channel()),
        users: UserServiceClient::new(channel.clone()),
        catalog: CatalogServiceClient::new(channel.clone()),
        payments: PaymentServiceClient::new(channel),
        _servers: (peers, cart),
        _dir: dir,
    }
}

async fn cart_server(dir: &std::path::Path, sidecar: SocketAddr) -> TestServer {
    let service = meshwork_cart::service(dir, sidecar).await.expect("cart");
    TestServer::start(Routes::new(service), &[meshwork_cart::GRPC_SERVICE])
        .await
        .expect("cart server")
}

impl Mesh {
    async fn user(&mut self, email: &str) -> String {
        let req = RegisterRequest {
            email: email.into(),
            password: "password1".into(),
            display_name: String::new(),
        };
        self.users
            .register(req)
            .await
            .expect("register")
            .into_inner()
            .user
            .expect("user")
            .id
    }

    async fn add(
        &mut self,
        user: &str,
        product: &str,
        quantity: i32,
    ) -> Result<meshwork_proto::cart::Cart, tonic::Status> {
        let req = AddItemRequest {
            user_id: user.into(),
            product_id: product.into(),
            quantity,
        };
        Ok(self.cart.add_item(req).await?.into_inner())
    }

    async fn checkout(&mut self, user: &str) -> Result<meshwork_proto::payments::Order, tonic::Status> {
        let response = self
            .cart
            .checkout(CheckoutRequest { user_id: user.into() })
            .await?
            .into_inner();
        Ok(response.order.expect("order"))
    }
}

#[tokio::test]
async fn a_full_checkout_through_the_mesh() {
    let mut mesh = start().await;
    let user = mesh.user("ann@example.com").await;

    let empty = mesh
        .cart
        .get_cart(GetCartRequest { user_id: user.clone() })
        .await
        .expect("get")
        .into_inner();
    assert!(empty.items.is_empty(), "a user without a cart has an empty one");

    mesh.add(&user, "book-ddia", 1).await.expect("add");
    mesh.add(&user, "kitchen-scale", 2).await.expect("add");
    mesh.add(&user, "toys-kite", 1).await.expect("add");
    let cart = mesh.add(&user, "book-ddia", 1).await.expect("add more");
    let items: Vec<(&str, i32)> = cart.items.iter().map(|i| (i.product_id.as_str(), i.quantity)).collect();
    assert_eq!(items, [("book-ddia", 2), ("kitchen-scale", 2), ("toys-kite", 1)]);
    let cart = mesh
        .cart
        .remove_item(RemoveItemRequest {
            user_id: user.clone(),
            product_id: "toys-kite".into(),
        })
        .await
        .expect("remove")
        .into_inner();
    assert_eq!(cart.items.len(), 2);

    // Prices come from the catalog at checkout time, not from when items were added.
    mesh.catalog
        .update_product(UpdateProductRequest {
            product_id: "kitchen-scale".into(),
            price: None,
            stock: Some(2),
        })
        .await
        .expect("set stock");
    let prices = mesh
        .catalog
        .batch_get_products(BatchGetProductsRequest {
            product_ids: vec!["book-ddia".into(), "kitchen-scale".into()],
        })
        .await
        .expect("prices")
        .into_inner()
        .products;
    let expected: i64 = prices
        .iter()
        .map(|p| p.price.as_ref().expect("price").amount_minor * 2)
        .sum();

    let order = mesh.checkout(&user).await.expect("checkout");
    assert_eq!(order.user_id, user);
    assert_eq!(order.status, OrderStatus::Paid as i32);
    assert_eq!(
        order.total.as_ref().map(|m| (m.amount_minor, m.currency_code.as_str())),
        Some((expected, "USD"))
    );
    assert_eq!(order.lines.len(), 2);
    assert_eq!(order.lines[0].name, "Designing Data-Intensive Applications");

    let cart = mesh
        .cart
        .get_cart(GetCartRequest { user_id: user.clone() })
        .await
        .expect("get")
        .into_inner();
    assert!(cart.items.is_empty(), "checkout empties the cart");
    let orders = mesh
        .payments
        .list_orders(ListOrdersRequest { user_id: user.clone() })
        .await
        .expect("orders");
    assert_eq!(orders.into_inner().orders, std::slice::from_ref(&order));

    // The checkout took the two units left; a refund puts them back, once.
    let scale_stock = |mut catalog: CatalogServiceClient<Channel>| async move {
        let request = GetProductRequest {
            product_id: "kitchen-scale".into(),
        };
        catalog.get_product(request).await.expect("get").into_inner().stock
    };
    assert_eq!(scale_stock(mesh.catalog.clone()).await, 0);
    for _ in 0..2 {
        let refunded = mesh
            .payments
            .refund(RefundRequest {
                order_id: order.id.clone(),
            })
            .await
            .expect("refund")
            .into_inner();
        assert_eq!(refunded.status, OrderStatus::Refunded as i32);
        assert_eq!(scale_stock(mesh.catalog.clone()).await, 2);
    }

    // Nothing changed since: the cart is empty, so no second order.
    let err = mesh.checkout(&user).await.expect_err("second checkout");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "cart is empty");

    // A new cart gets a new key, hence a second order.
    mesh.add(&user, "toys-kite", 1).await.expect("add");
    let second = mesh.checkout(&user).await.expect("second order");
    assert_ne!(second.id, order.id);
    assert_ne!(second.idempotency_key, order.idempotency_key);
}

#[tokio::test]
async fn racing_checkouts_of_one_cart_make_one_order() {
    let mut mesh = start().await;
    let user = mesh.user("race@example.com").await;
    mesh.add(&user, "elec-mouse", 1).await.expect("add");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let mut cart = mesh.cart.clone();
            let user = user.clone();
            tokio::spawn(async move { cart.checkout(CheckoutRequest { user_id: user }).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
            Err(status) => assert_eq!(
                (status.code(), status.message()),
                (Code::FailedPrecondition, "cart is empty")
            ),
        }
    }
    assert_eq!(ok, 1);
    let orders = mesh
        .payments
        .list_orders(ListOrdersRequest { user_id: user })
        .await
        .expect("orders");
    assert_eq!(orders.into_inner().orders.len(), 1);
}

#[tokio::test]
async fn wrong_input_and_failed_steps_get_the_right_status() {
    let mut mesh = start().await;
    let user = mesh.user("bob@example.com").await;

    let err = mesh.add(&user, "book-ddia", -2).await.expect_err("negative quantity");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "quantity must be at least 1, got -2");

    let err = mesh.add(&user, "no-such-thing", 1).await.expect_err("unknown product");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "unknown product 'no-such-thing'");

    let err = mesh.checkout(&user).await.expect_err("empty cart");
    assert_eq!((err.code(), err.message()), (Code::FailedPrecondition, "cart is empty"));

    // An unknown user gets no cart.
    let err = mesh.add("ghost-user", "book-ddia", 1).await.expect_err("unknown user");
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "unknown user 'ghost-user'")
    );
    let err = mesh.checkout("ghost-user").await.expect_err("unknown user");
    assert_eq!((err.code(), err.message()), (Code::FailedPrecondition, "cart is empty"));

    // garden-planter is seeded with no stock.
    mesh.add(&user, "garden-planter", 1).await.expect("add");
    let err = mesh.checkout(&user).await.expect_err("no stock");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("garden-planter"), "{}", err.message());
    let cart = mesh
        .cart
        .get_cart(GetCartRequest { user_id: user.clone() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(cart.items.len(), 1, "a failed checkout leaves the cart as it was");
    let orders = mesh
        .payments
        .list_orders(ListOrdersRequest { user_id: user })
        .await
        .expect("orders");
    assert!(orders.into_inner().orders.is_empty());
}

#[tokio::test]
async fn an_absent_sidecar_is_unavailable_and_says_which_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port that was free a moment ago: nothing listens there now.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let server = cart_server(dir.path(), closed).await;
    let mut cart = CartServiceClient::new(server.channel());
    let err = cart
        .add_item(AddItemRequest {
            user_id: "u".into(),
            product_id: "book-ddia".into(),
            quantity: 1,
        })
        .await
        .expect_err("no sidecar");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("adding to the cart: looking up user 'u'"),
        "{}",
        err.message()
    );
}
