//! The users service over a real loopback socket: every RPC's happy path and the
//! statuses for wrong input.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use meshwork_proto::users::{
    GetUserRequest, LoginRequest, Preferences, RegisterRequest, UpdatePreferencesRequest, User,
    user_service_client::UserServiceClient,
};
use meshwork_service_kit::testing::TestServer;
use tonic::{Code, transport::Channel};

struct Fixture {
    client: UserServiceClient<Channel>,
    dir: tempfile::TempDir,
    _server: TestServer,
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = meshwork_users::service(dir.path()).await.expect("service");
    let server = TestServer::start(tonic::service::Routes::new(service), &[meshwork_users::GRPC_SERVICE])
        .await
        .expect("server");
    Fixture {
        client: UserServiceClient::new(server.channel()),
        dir,
        _server: server,
    }
}

async fn register(client: &mut UserServiceClient<Channel>, email: &str, password: &str) -> Result<User, tonic::Status> {
    let req = RegisterRequest {
        email: email.into(),
        password: password.into(),
        display_name: "Ann Lee".into(),
    };
    Ok(client.register(req).await?.into_inner().user.expect("user in response"))
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
}

#[tokio::test]
async fn register_login_get_and_update() {
    let Fixture {
        mut client,
        dir,
        _server: _running,
    } = start().await;

    let user = register(&mut client, " Ann@Example.com", "correct horse")
        .await
        .expect("register");
    assert_eq!(user.email, "ann@example.com");
    assert_eq!(user.display_name, "Ann Lee");
    assert!(
        uuid::Uuid::parse_str(&user.id).is_ok_and(|u| u.get_version_num() == 7),
        "{}",
        user.id
    );
    let prefs = user.preferences.clone().expect("preferences");
    assert_eq!((prefs.locale.as_str(), prefs.currency.as_str()), ("en-US", "USD"));
    assert!(user.created_at.is_some());

    let login = client
        .login(LoginRequest {
            email: "ANN@example.com".into(),
            password: "correct horse".into(),
        })
        .await
        .expect("login")
        .into_inner();
    assert_eq!(login.user.as_ref().map(|u| u.id.as_str()), Some(user.id.as_str()));
    let public = std::fs::read(dir.path().join(meshwork_users::PUBLIC_KEY_FILE)).expect("public key file");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[meshwork_users::TOKEN_ISSUER]);
    let claims = jsonwebtoken::decode::<Claims>(
        &login.access_token,
        &DecodingKey::from_ed_pem(&public).expect("public pem"),
        &validation,
    )
    .expect("token verifies with the published key")
    .claims;
    assert_eq!(claims.sub, user.id);
    assert_eq!(Some(claims.exp), login.expires_at.map(|t| t.seconds));

    let got = client
        .get_user(GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, user);

    let updated = client
        .update_preferences(UpdatePreferencesRequest {
            user_id: user.id.clone(),
            preferences: Some(Preferences {
                locale: "de-ch".into(),
                currency: "CHF".into(),
            }),
        })
        .await
        .expect("update")
        .into_inner();
    let prefs = updated.preferences.expect("preferences");
    assert_eq!((prefs.locale.as_str(), prefs.currency.as_str()), ("de-CH", "CHF"));
    let got = client
        .get_user(GetUserRequest { user_id: user.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.preferences, Some(prefs));
}

#[tokio::test]
async fn wrong_input_gets_the_right_status() {
    let Fixture {
        mut client,
        _server: _running,
        dir: _dir,
    } = start().await;

    let err = register(&mut client, "not-an-email", "correct horse")
        .await
        .expect_err("bad email");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("email "), "{}", err.message());

    let err = register(&mut client, "bob@example.com", "short")
        .await
        .expect_err("short password");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at least 8"), "{}", err.message());

    let user = register(&mut client, "bob@example.com", "password1")
        .await
        .expect("register");
    let err = register(&mut client, "BOB@example.com", "password2")
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Code::AlreadyExists);

    // Wrong password and unknown email are indistinguishable.
    let wrong = client
        .login(LoginRequest {
            email: "bob@example.com".into(),
            password: "password2".into(),
        })
        .await
        .expect_err("wrong password");
    let unknown = client
        .login(LoginRequest {
            email: "nobody@example.com".into(),
            password: "password1".into(),
        })
        .await
        .expect_err("unknown email");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message());

    let err = client
        .get_user(GetUserRequest {
            user_id: "no-such-id".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("no-such-id"), "{}", err.message());
    let err = client
        .get_user(GetUserRequest { user_id: String::new() })
        .await
        .expect_err("empty id");
    assert_eq!(err.code(), Code::InvalidArgument);

    let prefs = |locale: &str, currency: &str| UpdatePreferencesRequest {
        user_id: user.id.clone(),
        preferences: Some(Preferences {
            locale: locale.into(),
            currency: currency.into(),
        }),
    };
    let err = client
        .update_preferences(prefs("not a locale", "EUR"))
        .await
        .expect_err("bad locale");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("locale"), "{}", err.message());
    let err = client
        .update_preferences(prefs("fr-FR", "euro"))
        .await
        .expect_err("bad currency");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("currency"), "{}", err.message());
    let err = client
        .update_preferences(UpdatePreferencesRequest {
            user_id: user.id.clone(),
            preferences: None,
        })
        .await
        .expect_err("missing preferences");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut unknown = prefs("fr-FR", "EUR");
    unknown.user_id = "no-such-id".into();
    let err = client.update_preferences(unknown).await.expect_err("unknown user");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn the_signing_key_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _ = meshwork_users::service(dir.path()).await.expect("first start");
    let key = std::fs::read(dir.path().join(meshwork_users::PRIVATE_KEY_FILE)).expect("key");
    let _ = meshwork_users::service(dir.path()).await.expect("second start");
    assert_eq!(
        std::fs::read(dir.path().join(meshwork_users::PRIVATE_KEY_FILE)).expect("key"),
        key
    );
    assert!(dir.path().join("users.db").exists());
}
