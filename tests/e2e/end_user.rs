//! The end user inside the mesh, as real processes (`mesh up`): a call made
//! for one user (the gateway's `x-mesh-user` header, sent here through the
//! demo client's sidecar) reaches that user's own profile, cart and orders
//! and is PERMISSION_DENIED on anyone else's, in every service; a call
//! without the header is a workload's own and proceeds. Also what the users
//! service runs with under `mesh up`: roles from its `env`, and a JWKS that
//! names the key of the tokens it issues.

use std::time::Duration;

use meshwork_config::END_USER_HEADER;
use meshwork_proto::{
    cart::{self, cart_service_client::CartServiceClient},
    payments::{self, payment_service_client::PaymentServiceClient},
    users::{self, user_service_client::UserServiceClient},
};
use tonic::{Code, Request, Status, transport::Channel};

use crate::support::mesh_process::{MeshProcess, shop_config};

const BASE: u16 = 20100;
const PRODUCT: &str = "book-ddia";

/// `message` on behalf of `user`, as the gateway sends it.
fn as_user<T>(user: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(END_USER_HEADER, user.parse().expect("ascii user id"));
    request
}

async fn register(channel: &Channel, email: &str) -> users::User {
    UserServiceClient::new(channel.clone())
        .register(users::RegisterRequest {
            email: email.into(),
            password: "long enough password".into(),
            display_name: "Shopper".into(),
        })
        .await
        .expect("register")
        .into_inner()
        .user
        .expect("user")
}

/// Asserts PERMISSION_DENIED with the kit's message.
#[track_caller]
fn denied<T: std::fmt::Debug>(result: Result<T, Status>, user: &str, what: &str, owner: &str) {
    let status = result.expect_err("another user's data");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), format!("user {user} may not {what} of user {owner}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reaches_only_their_own_profile_cart_and_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shop_config(dir.path(), BASE);
    let text = std::fs::read_to_string(&config).expect("read");
    let header = "[services.users]\n";
    assert!(text.contains(header));
    let text = text.replace(
        header,
        &format!("{header}env = {{ MESH_USERS_ADMIN_EMAILS = \"boss@example.com\" }}\n"),
    );
    std::fs::write(&config, text).expect("write config");
    let mut mesh = MeshProcess::start(&["up", "--config", config.to_str().expect("utf-8")]);
    mesh.wait_for("mesh: up", Duration::from_secs(120));
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", BASE + 200))
        .expect("uri")
        .connect_lazy();
    let mut users = UserServiceClient::new(channel.clone());
    let mut carts = CartServiceClient::new(channel.clone());
    let mut payments = PaymentServiceClient::new(channel.clone());

    let ann = register(&channel, "ann@example.com").await.id;
    let bob = register(&channel, "bob@example.com").await.id;
    let boss = register(&channel, "boss@example.com").await;
    assert_eq!(boss.roles, ["admin"], "MESH_USERS_ADMIN_EMAILS from mesh.toml's env");

    // Profile.
    let own = users
        .get_user(as_user(&ann, users::GetUserRequest { user_id: ann.clone() }))
        .await
        .expect("own profile");
    assert_eq!(own.into_inner().id, ann);
    denied(
        users
            .get_user(as_user(&ann, users::GetUserRequest { user_id: bob.clone() }))
            .await,
        &ann,
        "read the profile",
        &bob,
    );
    let prefs = users::UpdatePreferencesRequest {
        user_id: bob.clone(),
        preferences: Some(users::Preferences {
            locale: "fr-FR".into(),
            currency: "EUR".into(),
        }),
    };
    denied(
        users.update_preferences(as_user(&ann, prefs.clone())).await,
        &ann,
        "change the preferences",
        &bob,
    );
    users
        .update_preferences(as_user(&bob, prefs))
        .await
        .expect("own preferences");

    // Cart.
    let add = |user_id: &str| cart::AddItemRequest {
        user_id: user_id.into(),
        product_id: PRODUCT.into(),
        quantity: 1,
    };
    let cart = carts.add_item(as_user(&ann, add(&ann))).await.expect("own cart");
    assert_eq!(cart.into_inner().items.len(), 1);
    carts.add_item(as_user(&bob, add(&bob))).await.expect("bob's own cart");
    denied(
        carts.add_item(as_user(&ann, add(&bob))).await,
        &ann,
        "add to the cart",
        &bob,
    );
    denied(
        carts
            .get_cart(as_user(&ann, cart::GetCartRequest { user_id: bob.clone() }))
            .await,
        &ann,
        "read the cart",
        &bob,
    );
    let remove = cart::RemoveItemRequest {
        user_id: bob.clone(),
        product_id: PRODUCT.into(),
    };
    denied(
        carts.remove_item(as_user(&ann, remove)).await,
        &ann,
        "remove from the cart",
        &bob,
    );
    denied(
        carts
            .checkout(as_user(&ann, cart::CheckoutRequest { user_id: bob.clone() }))
            .await,
        &ann,
        "check out the cart",
        &bob,
    );
    let bobs = carts
        .get_cart(cart::GetCartRequest { user_id: bob.clone() })
        .await
        .expect("a workload reads any cart");
    assert_eq!(bobs.into_inner().items.len(), 1, "nothing of bob's cart changed");

    // Orders: ann checks out her own cart (cart → catalog → payments within
    // the mesh, on cart's authority).
    let order = carts
        .checkout(as_user(&ann, cart::CheckoutRequest { user_id: ann.clone() }))
        .await
        .expect("own checkout")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(order.user_id, ann);
    let listed = payments
        .list_orders(as_user(&ann, payments::ListOrdersRequest { user_id: ann.clone() }))
        .await
        .expect("own orders")
        .into_inner();
    assert_eq!(listed.orders.len(), 1);
    denied(
        payments
            .list_orders(as_user(&bob, payments::ListOrdersRequest { user_id: ann.clone() }))
            .await,
        &bob,
        "read the orders",
        &ann,
    );
    let get = || payments::GetOrderRequest {
        order_id: order.id.clone(),
    };
    assert_eq!(
        payments
            .get_order(as_user(&ann, get()))
            .await
            .expect("own order")
            .into_inner()
            .id,
        order.id
    );
    denied(
        payments.get_order(as_user(&bob, get())).await,
        &bob,
        "read the orders",
        &ann,
    );
    let refund = || payments::RefundRequest {
        order_id: order.id.clone(),
    };
    denied(
        payments.refund(as_user(&bob, refund())).await,
        &bob,
        "refund the orders",
        &ann,
    );
    payments
        .get_order(get())
        .await
        .expect("the back office reads any order");
    let refunded = payments
        .refund(refund())
        .await
        .expect("the back office refunds")
        .into_inner();
    assert_eq!(refunded.status, payments::OrderStatus::Refunded as i32);

    // The token ann logs in with names a key the JWKS publishes.
    let login = users
        .login(users::LoginRequest {
            email: "ann@example.com".into(),
            password: "long enough password".into(),
        })
        .await
        .expect("login")
        .into_inner();
    let kid = jsonwebtoken::decode_header(&login.access_token)
        .expect("jwt header")
        .kid
        .expect("kid");
    let jwks = users
        .get_jwks(users::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    assert!(jwks.keys.iter().any(|k| k.kid == kid), "{kid} not in {jwks:?}");
    println!("end user: 9 calls for another user denied, own calls and workload calls served; kid {kid} published");
}
