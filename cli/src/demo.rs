//! The shop, walked through once from outside: a client with its own mesh
//! identity (`demo` in mesh.toml) calls through its own sidecar, like any
//! workload; then, when the mesh has a gateway, once more over HTTP and
//! JSON through it, as a browser would (gateway.rs). Each step prints what
//! it did and what came back.

mod gateway;

use std::{path::PathBuf, time::SystemTime};

use anyhow::{Context, Result, bail};
use meshwork_config::MeshConfig;
use meshwork_contracts::dynamic::call_json;
use meshwork_proto::{
    cart::{self, cart_service_client::CartServiceClient},
    catalog::{self, catalog_service_client::CatalogServiceClient},
    common::Money,
    payments::{self, payment_service_client::PaymentServiceClient},
    users::{self, user_service_client::UserServiceClient},
};
use tonic::{Code, transport::Channel};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The mesh description.
    #[arg(long, default_value = "mesh.toml", env = "MESH_CONFIG")]
    config: PathBuf,
}

/// The mesh identity the demo calls as.
const DEMO_CLIENT: &str = "demo";

pub async fn run(args: DemoArgs) -> Result<()> {
    let config = MeshConfig::load(&args.config)?;
    walkthrough(&config).await
}

/// The whole walk: over gRPC through the demo's sidecar, then through the gateway.
pub async fn walkthrough(config: &MeshConfig) -> Result<()> {
    let stamp = over_grpc(config).await?;
    through_gateway(config, stamp).await
}

/// The walk over gRPC as the mesh identity `demo`; returns the stamp that
/// names its accounts, which the walk through the gateway reuses.
pub async fn over_grpc(config: &MeshConfig) -> Result<u128> {
    let sidecar = config.clients.get(DEMO_CLIENT).with_context(|| {
        format!(
            "{}: clients.{DEMO_CLIENT}: the demo needs this client",
            config.source.display()
        )
    })?;
    let channel = Channel::from_shared(format!("http://{}", sidecar.outbound))?.connect_lazy();
    let mut users = UserServiceClient::new(channel.clone());
    let mut catalog = CatalogServiceClient::new(channel.clone());
    let mut carts = CartServiceClient::new(channel.clone());
    let mut payments = PaymentServiceClient::new(channel.clone());
    println!(
        "demo: calling the mesh as {} through {}",
        config.spiffe_id(DEMO_CLIENT),
        sidecar.outbound
    );

    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let email = format!("ada+{stamp}@example.com");
    let password = "correct horse battery";
    let user = users
        .register(users::RegisterRequest {
            email: email.clone(),
            password: password.into(),
            display_name: "Ada Lovelace".into(),
        })
        .await
        .context("users.Register")?
        .into_inner()
        .user
        .context("users.Register returned no user")?;
    println!("demo: 1. registered {} as user {}", user.email, user.id);

    let login = users
        .login(users::LoginRequest {
            email,
            password: password.into(),
        })
        .await
        .context("users.Login")?
        .into_inner();
    let token_head: String = login.access_token.chars().take(24).collect();
    println!("demo: 2. logged in; access token {token_head}…");

    let page = catalog
        .list_products(catalog::ListProductsRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .context("catalog.ListProducts")?
        .into_inner();
    println!("demo: 3. the catalog's first page:");
    for product in &page.products {
        println!(
            "demo:      {:<22} {:<40} {:>10}  stock {}",
            product.id,
            product.name,
            money(&product.price),
            product.stock
        );
    }
    let [first, second, ..] = page.products.as_slice() else {
        bail!("the catalog returned fewer than two products");
    };

    let quantity_error = carts
        .add_item(cart::AddItemRequest {
            user_id: user.id.clone(),
            product_id: first.id.clone(),
            quantity: -2,
        })
        .await;
    match quantity_error {
        Err(status) if status.code() == Code::InvalidArgument => {
            println!(
                "demo: 4. adding -2 units is refused: {} ({:?})",
                status.message(),
                status.code()
            )
        }
        other => bail!("cart.AddItem with quantity -2 should be INVALID_ARGUMENT, got {other:?}"),
    }

    for (product, quantity) in [(first, 2), (second, 1)] {
        carts
            .add_item(cart::AddItemRequest {
                user_id: user.id.clone(),
                product_id: product.id.clone(),
                quantity,
            })
            .await
            .with_context(|| format!("cart.AddItem {}", product.id))?;
    }
    let cart = carts
        .get_cart(cart::GetCartRequest {
            user_id: user.id.clone(),
        })
        .await
        .context("cart.GetCart")?
        .into_inner();
    let items: Vec<String> = cart
        .items
        .iter()
        .map(|i| format!("{} × {}", i.quantity, i.product_id))
        .collect();
    println!("demo: 5. cart holds {}", items.join(", "));

    let order = carts
        .checkout(cart::CheckoutRequest {
            user_id: user.id.clone(),
        })
        .await
        .context("cart.Checkout")?
        .into_inner()
        .order
        .context("cart.Checkout returned no order")?;
    println!(
        "demo: 6. checked out: order {} for {} ({} lines), cart → users → catalog → payments",
        order.id,
        money(&order.total),
        order.lines.len()
    );

    let stored = payments
        .get_order(payments::GetOrderRequest {
            order_id: order.id.clone(),
        })
        .await
        .context("payments.GetOrder")?
        .into_inner();
    println!(
        "demo: 7. payments has order {} as {}",
        stored.id,
        stored.status().as_str_name()
    );

    let cart = carts
        .get_cart(cart::GetCartRequest {
            user_id: user.id.clone(),
        })
        .await
        .context("cart.GetCart")?;
    println!(
        "demo: 8. the cart is empty again: {}",
        cart.into_inner().items.is_empty()
    );

    let charge = payments
        .charge(payments::ChargeRequest {
            idempotency_key: format!("demo-{stamp}"),
            user_id: user.id.clone(),
            lines: order.lines.clone(),
            total: order.total,
        })
        .await;
    match charge {
        Err(status) if status.code() == Code::PermissionDenied => {
            println!("demo: 9. the demo may not charge directly: {}", status.message())
        }
        other => bail!("payments.Charge from the demo should be PERMISSION_DENIED, got {other:?}"),
    }
    if config.services.contains_key(REVIEWS) {
        review(config, channel, &first.id, &user.display_name, stamp).await?;
    }
    Ok(stamp)
}

/// The same walk over HTTP and JSON, when the mesh has a gateway; then the demo is done.
pub async fn through_gateway(config: &MeshConfig, stamp: u128) -> Result<()> {
    if let Some(edge) = &config.gateway {
        gateway::walk(edge, stamp)
            .await
            .context("the walk through the gateway")?;
    }
    println!("demo: done: checkout completed through the mesh");
    Ok(())
}

/// The polyglot example's Python service (examples/polyglot), when the mesh
/// has it: called from its contract alone, with JSON, as any service of
/// one's own can be.
const REVIEWS: &str = "reviews";

async fn review(config: &MeshConfig, channel: Channel, product_id: &str, author: &str, stamp: u128) -> Result<()> {
    let mesh = meshwork_contracts::Mesh::new(std::sync::Arc::new(config.clone()))?;
    let method = |name: &str| {
        let path = format!("/reviews.v1.ReviewService/{name}");
        mesh.registry
            .method(&path)
            .map(|m| m.descriptor.clone())
            .with_context(|| format!("no contract for {path}: give services.{REVIEWS}.contracts"))
    };
    let added = serde_json::json!({
        "reviewId": format!("demo-{stamp}"),
        "productId": product_id,
        "author": author,
        "stars": 5,
        "text": "Arrived in one piece, through every sidecar.",
    });
    call_json(channel.clone(), &method("AddReview")?, &added.to_string())
        .await
        .context("reviews.AddReview")?;
    let rating = serde_json::json!({ "productId": product_id });
    let rating = call_json(channel, &method("GetRating")?, &rating.to_string())
        .await
        .context("reviews.GetRating")?;
    println!("demo: 10. reviewed {product_id} with the Python service: rating {rating}");
    Ok(())
}

fn money(money: &Option<Money>) -> String {
    match money {
        Some(m) => format!(
            "{}{}.{:02} {}",
            if m.amount_minor < 0 { "-" } else { "" },
            m.amount_minor.unsigned_abs() / 100,
            m.amount_minor.unsigned_abs() % 100,
            m.currency_code
        ),
        None => "-".into(),
    }
}
