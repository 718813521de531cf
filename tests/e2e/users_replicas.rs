//! The users service as replicas on different machines run it: data folders
//! of their own, one PostgreSQL database. Tokens any replica signs verify
//! with the key set every replica publishes, before and after one of them
//! rotates the key, which is what lets the gateway (or any verifier) ask
//! whichever replica DNS gives it for the JWKS.

use std::collections::BTreeSet;

use meshwork_proto::users::{
    GetJwksRequest, Jwks, LoginRequest, RegisterRequest, user_service_client::UserServiceClient,
};
use meshwork_service_kit::testing::TestServer;
use meshwork_users::Settings;
use tonic::transport::Channel;

use crate::support::postgres::Backend;

/// One replica: a data folder of its own, serving on a real socket.
struct Replica {
    _data_dir: tempfile::TempDir,
    server: TestServer,
}

impl Replica {
    async fn start(backend: &Backend, settings: Settings) -> Replica {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let database = backend.database(data_dir.path(), meshwork_users::NAME);
        let service = meshwork_users::service_with(data_dir.path(), &database, settings)
            .await
            .expect("users service");
        let server = TestServer::start(tonic::service::Routes::new(service), &[meshwork_users::GRPC_SERVICE])
            .await
            .expect("server");
        Replica {
            _data_dir: data_dir,
            server,
        }
    }

    fn client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.server.channel())
    }

    async fn jwks(&self) -> Jwks {
        self.client()
            .get_jwks(GetJwksRequest {})
            .await
            .expect("jwks")
            .into_inner()
    }

    async fn login(&self, email: &str) -> String {
        self.client()
            .login(LoginRequest {
                email: email.into(),
                password: "correct horse".into(),
            })
            .await
            .expect("login")
            .into_inner()
            .access_token
    }
}

fn kids(jwks: &Jwks) -> BTreeSet<String> {
    jwks.keys.iter().map(|k| k.kid.clone()).collect()
}

/// Verifies `token` with the key of `jwks` that its `kid` names.
fn verifies(token: &str, jwks: &Jwks) -> Result<(), String> {
    let kid = jsonwebtoken::decode_header(token)
        .map_err(|e| e.to_string())?
        .kid
        .ok_or("no kid")?;
    let key = jwks
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(format!("kid {kid} is not published"))?;
    let decoding = jsonwebtoken::DecodingKey::from_ed_components(&key.x).map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[meshwork_users::DEFAULT_AUDIENCE]);
    jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_replicas_on_one_postgres_sign_and_publish_one_key_set() {
    let backend = Backend::postgres("users_replicas").await;
    let a = Replica::start(&backend, Settings::default()).await;
    let b = Replica::start(&backend, Settings::default()).await;

    // An account made through one replica logs in through the other.
    a.client()
        .register(RegisterRequest {
            email: "ann@example.com".into(),
            password: "correct horse".into(),
            display_name: "Ann".into(),
        })
        .await
        .expect("register");
    let (from_a, from_b) = (a.login("ann@example.com").await, b.login("ann@example.com").await);
    let (jwks_a, jwks_b) = (a.jwks().await, b.jwks().await);
    assert_eq!(
        jwks_a.keys.len(),
        1,
        "the second replica took the first one's key: {jwks_a:?}"
    );
    assert_eq!(kids(&jwks_a), kids(&jwks_b));
    verifies(&from_b, &jwks_a).expect("b's token with a's key set");
    verifies(&from_a, &jwks_b).expect("a's token with b's key set");

    // A third replica that rotates at start (its interval is shorter than the
    // key's age): every replica publishes the new key at once, and the old
    // one still, so tokens signed before keep verifying.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let rotating = Settings {
        key_rotation: Some(std::time::Duration::from_secs(1)),
        ..Settings::default()
    };
    let c = Replica::start(&backend, rotating).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let rotated = loop {
        let jwks = b.jwks().await;
        if jwks.keys.len() >= 2 {
            break jwks;
        }
        assert!(tokio::time::Instant::now() < deadline, "no rotation seen: {jwks:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        kids(&rotated).is_superset(&kids(&jwks_a)),
        "the old key stays published"
    );
    assert_eq!(kids(&a.jwks().await), kids(&rotated));
    verifies(&from_a, &rotated).expect("a token from before the rotation");
    verifies(&c.login("ann@example.com").await, &a.jwks().await).expect("c's new key, published by a");
}
