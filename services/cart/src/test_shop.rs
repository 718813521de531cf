//! The shop in process for the cart's unit tests: users, catalog and
//! payments on one loopback server, a cart store, and a shopper.

use meshwork_proto::users::{RegisterRequest, user_service_client::UserServiceClient};
use meshwork_service_kit::testing::TestServer;

use crate::{db::Store, peers::Peers};

/// Users, catalog and payments in process, a cart store, and a shopper
/// with one book in the cart.
pub async fn shop(dir: &std::path::Path) -> (TestServer, Peers, Store, String) {
    let (listener, addr) = TestServer::listener().await.unwrap();
    let routes = tonic::service::Routes::new(meshwork_users::service(dir).await.unwrap())
        .add_service(meshwork_catalog::service(dir).await.unwrap())
        .add_service(meshwork_payments::service(dir, addr).await.unwrap());
    let mesh = TestServer::start_on(listener, routes, &[]).unwrap();
    let peers = Peers::new(mesh.channel());
    let store = Store::open(&meshwork_service_kit::Database::Sqlite(dir.join("cart.db")))
        .await
        .unwrap();
    let user = UserServiceClient::new(mesh.channel())
        .register(RegisterRequest {
            email: "r@example.com".into(),
            password: "password1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id;
    store.add(user.clone(), "book-ddia".into(), 1).await.unwrap();
    (mesh, peers, store, user)
}
