//! The gateway's token checks against a real users service on a loopback
//! socket: tokens it issues verify, and each way a token can be wrong is told
//! apart; the keys follow the service's key rotation while it runs, with one
//! fetch of the JWKS per unknown key however many requests bring it, and
//! none for keys already known.

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use meshwork_gateway::auth::{AuthError, Authenticator};
use meshwork_proto::users::{LoginRequest, RegisterRequest, user_service_client::UserServiceClient};
use meshwork_service_kit::testing::TestServer;
use meshwork_users::Settings;
use serde_json::json;
use tonic::transport::Channel;

/// A users service in this process, serving on a real socket.
struct Users {
    dir: tempfile::TempDir,
    server: TestServer,
}

impl Users {
    async fn start(settings: Settings) -> Users {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = meshwork_users::service_with(
            dir.path(),
            &meshwork_service_kit::Database::sqlite_in(dir.path(), meshwork_users::NAME),
            settings,
        )
        .await
        .expect("users service");
        let server = TestServer::start(tonic::service::Routes::new(service), &[meshwork_users::GRPC_SERVICE])
            .await
            .expect("server");
        Users { dir, server }
    }

    fn channel(&self) -> Channel {
        self.server.channel()
    }

    /// Registers `email` (unless it is already) and logs in: the user id and
    /// the access token.
    async fn login(&self, email: &str) -> (String, String) {
        let mut client = UserServiceClient::new(self.channel());
        let register = RegisterRequest {
            email: email.into(),
            password: "correct horse".into(),
            display_name: "Tester".into(),
        };
        if let Err(status) = client.register(register).await {
            assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
        }
        let login = client
            .login(LoginRequest {
                email: email.into(),
                password: "correct horse".into(),
            })
            .await
            .expect("login")
            .into_inner();
        (login.user.expect("user").id, login.access_token)
    }

    /// The newest signing key's private PEM, straight from the service's database.
    async fn newest_key(&self) -> String {
        use meshwork_service_kit::db::sqlx;
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}", self.dir.path().join("users.db").display());
        let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
            .await
            .expect("the users database");
        sqlx::query_scalar("SELECT private_pem FROM signing_keys ORDER BY created_at_ms DESC LIMIT 1")
            .fetch_one(&mut db)
            .await
            .expect("a key")
    }
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).expect("header").kid.expect("kid")
}

fn now() -> i64 {
    meshwork_service_kit::time::now_millis() / 1000
}

/// A token signed by `pem` under `kid`: the claims of a valid one, with
/// `overrides` (a null removes the claim).
fn sign(pem: &str, kid: &str, overrides: serde_json::Value) -> String {
    let mut claims = json!({
        "iss": "meshwork-users",
        "aud": "meshwork",
        "sub": "user-1",
        "iat": now(),
        "nbf": now(),
        "exp": now() + 600,
        "roles": [],
    });
    if let (Some(claims), Some(overrides)) = (claims.as_object_mut(), overrides.as_object()) {
        for (k, v) in overrides {
            if v.is_null() {
                claims.remove(k);
            } else {
                claims.insert(k.clone(), v.clone());
            }
        }
    }
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ed_pem(pem.as_bytes()).expect("pem"),
    )
    .expect("sign")
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    headers
}

fn auth_config() -> meshwork_config::Auth {
    meshwork_config::Auth::default()
}

#[tokio::test]
async fn tokens_of_the_users_service_verify_and_each_fault_is_named() {
    let users = Users::start(Settings {
        admin_emails: vec!["boss@example.com".into()],
        ..Settings::default()
    })
    .await;
    let auth = Authenticator::new(&auth_config(), users.channel());
    assert_eq!(
        auth.authenticate(&HeaderMap::new()).await,
        Ok(None),
        "no header, no principal"
    );
    assert_eq!(auth.jwks_fetches(), 0, "keys are fetched lazily");

    let (ann, token) = users.login("ann@example.com").await;
    let principal = auth
        .authenticate(&bearer(&token))
        .await
        .expect("valid")
        .expect("principal");
    assert_eq!(principal.user_id, ann);
    assert!(principal.roles.is_empty());
    assert_eq!(auth.jwks_fetches(), 1);
    let (_, boss_token) = users.login("boss@example.com").await;
    let boss = auth
        .authenticate(&bearer(&boss_token))
        .await
        .expect("valid")
        .expect("principal");
    assert_eq!(boss.roles, ["admin"]);
    assert_eq!(auth.jwks_fetches(), 1, "a known key needs no fetch");

    let kid = kid_of(&token);
    let key = users.newest_key().await;
    let check = |token: String| {
        let auth = auth.clone();
        async move { auth.authenticate(&bearer(&token)).await }
    };

    // Signed by another key under the same kid.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .expect("key")
        .serialize_pem();
    assert_eq!(check(sign(&other, &kid, json!({}))).await, Err(AuthError::BadSignature));
    // The real key, and each claim wrong in turn.
    assert!(
        check(sign(&key, &kid, json!({}))).await.is_ok(),
        "the control token verifies"
    );
    assert_eq!(
        check(sign(&key, &kid, json!({"exp": now() - 120}))).await,
        Err(AuthError::Expired)
    );
    assert!(
        check(sign(&key, &kid, json!({"exp": now() - 10}))).await.is_ok(),
        "expired within the 30 s leeway"
    );
    assert_eq!(
        check(sign(&key, &kid, json!({"nbf": now() + 300}))).await,
        Err(AuthError::NotYetValid)
    );
    assert_eq!(
        check(sign(&key, &kid, json!({"iss": "someone-else"}))).await,
        Err(AuthError::WrongIssuer)
    );
    assert_eq!(
        check(sign(&key, &kid, json!({"aud": "another-api"}))).await,
        Err(AuthError::WrongAudience)
    );
    assert!(matches!(
        check(sign(&key, &kid, json!({"aud": null}))).await,
        Err(AuthError::MalformedToken(m)) if m.contains("'aud'")
    ));
    assert!(matches!(
        check(sign(&key, &kid, json!({"sub": ""}))).await,
        Err(AuthError::MalformedToken(m)) if m.contains("'sub' is empty")
    ));
    // Signed by the real key but naming a key the service does not have; the
    // refetch it asks for falls within the refetch interval of the first
    // fetch, so no second fetch is made.
    assert_eq!(
        check(sign(&key, "made-up", json!({}))).await,
        Err(AuthError::UnknownKey(Some("made-up".into())))
    );
    assert_eq!(auth.jwks_fetches(), 1, "rate-limited");
    // Headers that are not a token at all.
    let mut two = bearer(&token);
    two.append(AUTHORIZATION, HeaderValue::from_static("Bearer a.b.c"));
    assert_eq!(
        auth.authenticate(&two).await,
        Err(AuthError::MalformedHeader("is sent more than once"))
    );
    let mut basic = HeaderMap::new();
    basic.insert(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
    assert_eq!(
        auth.authenticate(&basic).await,
        Err(AuthError::MalformedHeader("is not a Bearer token"))
    );
    let huge = format!("{}.{}.c", "a".repeat(4096), "b".repeat(4096));
    assert_eq!(check(huge).await, Err(AuthError::TooLarge));
    assert_eq!(auth.jwks_fetches(), 1);
}

#[tokio::test]
async fn roles_and_public_methods_come_from_the_config() {
    let users = Users::start(Settings {
        admin_emails: vec!["boss@example.com".into()],
        ..Settings::default()
    })
    .await;
    let config: meshwork_config::Auth = meshwork_config::Auth {
        public: vec!["shop.users.v1.UserService/Login".into()],
        roles: [("PaymentService/Refund".to_string(), "admin".to_string())]
            .into_iter()
            .collect(),
        ..auth_config()
    };
    let auth = Authenticator::new(&config, users.channel());
    let (_, ann) = users.login("ann@example.com").await;
    let (_, boss) = users.login("boss@example.com").await;
    let ann = auth.authenticate(&bearer(&ann)).await.expect("ann").expect("principal");
    let boss = auth
        .authenticate(&bearer(&boss))
        .await
        .expect("boss")
        .expect("principal");
    let refund = "/shop.payments.v1.PaymentService/Refund";
    assert_eq!(auth.authorize(refund, Some(&boss)), Ok(()));
    let forbidden = auth.authorize(refund, Some(&ann)).expect_err("no role");
    assert_eq!(forbidden, AuthError::Forbidden("admin".into()));
    assert_eq!(forbidden.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(auth.authorize(refund, None), Err(AuthError::Missing));
    assert_eq!(auth.authorize("/shop.users.v1.UserService/Login", None), Ok(()));
    assert_eq!(
        auth.authorize("/shop.cart.v1.CartService/GetCart", None),
        Err(AuthError::Missing)
    );
    assert_eq!(auth.authorize("/shop.cart.v1.CartService/GetCart", Some(&ann)), Ok(()));
}

#[tokio::test]
async fn an_unreachable_users_service_is_unavailable_not_unauthorized() {
    let users = Users::start(Settings::default()).await;
    let (_, token) = users.login("ann@example.com").await;
    let addr = users.server.addr;
    users.server.stop().await.expect("stop");
    let auth = Authenticator::new(&auth_config(), meshwork_service_kit::sidecar_channel(addr));
    let err = auth.authenticate(&bearer(&token)).await.expect_err("no keys");
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(err.to_string().contains("GetJwks"), "{err}");
    assert_eq!(auth.jwks_fetches(), 1);
    // Within the refetch interval the failure stands without another try.
    assert_eq!(auth.authenticate(&bearer(&token)).await, Err(err));
    assert_eq!(auth.jwks_fetches(), 1);
}

#[tokio::test]
async fn keys_follow_rotation_while_the_service_runs() {
    let users = Users::start(Settings {
        key_rotation: Some(Duration::from_secs(1)),
        ..Settings::default()
    })
    .await;
    let auth = Authenticator::with_refetch_interval(&auth_config(), users.channel(), Duration::from_millis(100));
    let (ann, old) = users.login("ann@example.com").await;
    assert_eq!(
        auth.authenticate(&bearer(&old))
            .await
            .expect("old token")
            .map(|p| p.user_id),
        Some(ann.clone())
    );
    assert_eq!(auth.jwks_fetches(), 1);

    // Log in until a token comes signed by a new key.
    let deadline = Instant::now() + Duration::from_secs(15);
    let new = loop {
        let (_, token) = users.login("ann@example.com").await;
        if kid_of(&token) != kid_of(&old) {
            break token;
        }
        assert!(Instant::now() < deadline, "no key rotation within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let the refetch interval pass since the first fetch.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let got = auth
        .authenticate(&bearer(&new))
        .await
        .expect("new token")
        .map(|p| p.user_id);
    assert_eq!(got, Some(ann.clone()));
    assert_eq!(auth.jwks_fetches(), 2, "one refetch for the new kid");
    assert_eq!(
        auth.authenticate(&bearer(&old))
            .await
            .expect("old token still")
            .map(|p| p.user_id),
        Some(ann.clone())
    );
    assert_eq!(
        auth.authenticate(&bearer(&new))
            .await
            .expect("again")
            .map(|p| p.user_id),
        Some(ann)
    );
    assert_eq!(auth.jwks_fetches(), 2, "known keys need no fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kids_cause_one_fetch() {
    let users = Users::start(Settings::default()).await;
    let (_, token) = users.login("ann@example.com").await;
    let key = users.newest_key().await;
    let auth = Authenticator::with_refetch_interval(&auth_config(), users.channel(), Duration::from_millis(100));

    // Fifty requests at once on a cold cache: one fetch serves them all.
    let valid: Vec<_> = (0..50)
        .map(|_| {
            let (auth, token) = (auth.clone(), token.clone());
            tokio::spawn(async move { auth.authenticate(&bearer(&token)).await })
        })
        .collect();
    for task in valid {
        assert!(task.await.expect("task").expect("valid").is_some());
    }
    assert_eq!(auth.jwks_fetches(), 1);

    // Past the refetch interval, fifty different unknown kids at once: one fetch.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let unknown: Vec<_> = (0..50)
        .map(|n| {
            let auth = auth.clone();
            let token = sign(&key, &format!("unknown-{n}"), json!({}));
            tokio::spawn(async move { auth.authenticate(&bearer(&token)).await })
        })
        .collect();
    for (n, task) in unknown.into_iter().enumerate() {
        assert_eq!(
            task.await.expect("task"),
            Err(AuthError::UnknownKey(Some(format!("unknown-{n}"))))
        );
    }
    assert_eq!(auth.jwks_fetches(), 2, "one refetch for fifty unknown kids");
    assert!(
        auth.authenticate(&bearer(&token)).await.expect("known").is_some(),
        "the known key still works"
    );
    assert_eq!(auth.jwks_fetches(), 2);
}

/// The hot path: a token of a known key is verified with no fetch and no
/// wait, from many tasks at once; prints what one verification costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_keys_verify_without_fetching_from_many_tasks() {
    const TASKS: usize = 4;
    const EACH: usize = 500;
    let users = Users::start(Settings::default()).await;
    let (ann, token) = users.login("ann@example.com").await;
    let auth = Authenticator::new(&auth_config(), users.channel());
    assert_eq!(auth.preload().await, Ok(1));
    let headers = bearer(&token);
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (auth, headers, ann) = (auth.clone(), headers.clone(), ann.clone());
            tokio::spawn(async move {
                for _ in 0..EACH {
                    let principal = auth.authenticate(&headers).await.expect("valid").expect("principal");
                    assert_eq!(principal.user_id, ann);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = started.elapsed();
    assert_eq!(auth.jwks_fetches(), 1, "only the preload fetched");
    println!(
        "verified {} tokens in {elapsed:?} on 2 threads: {:.1} µs each",
        TASKS * EACH,
        elapsed.as_secs_f64() * 1e6 / (TASKS * EACH) as f64
    );
}
