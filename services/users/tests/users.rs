//! The users service over a real loopback socket: every RPC's happy path and the
//! statuses for wrong input.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use meshwork_proto::users::{
    GetJwksRequest, GetUserRequest, LoginRequest, Preferences, RegisterRequest, UpdatePreferencesRequest, User,
    user_service_client::UserServiceClient,
};
use meshwork_service_kit::{end_user::END_USER_HEADER, testing::TestServer};
use meshwork_users::Settings;
use tonic::{Code, transport::Channel};

struct Fixture {
    client: UserServiceClient<Channel>,
    dir: tempfile::TempDir,
    _server: TestServer,
}

async fn start() -> Fixture {
    start_in(tempfile::tempdir().expect("tempdir")).await
}

async fn start_in(dir: tempfile::TempDir) -> Fixture {
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
    validation.set_audience(&[meshwork_users::DEFAULT_AUDIENCE]);
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
    let keys = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join(meshwork_users::KEYS_DIR))
            .expect("keys folder")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        names
    };
    let _ = meshwork_users::service(dir.path()).await.expect("first start");
    let first = keys();
    assert_eq!(first.len(), 1);
    let _ = meshwork_users::service(dir.path()).await.expect("second start");
    assert_eq!(keys(), first);
    assert!(dir.path().join("users.db").exists());
}

/// The single key file of the versions before rotation keeps signing after
/// the upgrade: its kid is the one JWKS publishes, and tokens verify with it.
#[tokio::test]
async fn the_key_of_an_earlier_version_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .expect("key")
        .serialize_pem();
    std::fs::write(dir.path().join(meshwork_users::PRIVATE_KEY_FILE), &pem).expect("write");
    let Fixture {
        mut client,
        dir: _dir,
        _server: _running,
    } = start_in(dir).await;
    let user = register(&mut client, "old@example.com", "correct horse")
        .await
        .expect("register");
    let token = client
        .login(LoginRequest {
            email: user.email,
            password: "correct horse".into(),
        })
        .await
        .expect("login")
        .into_inner()
        .access_token;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[meshwork_users::DEFAULT_AUDIENCE]);
    let public = rcgen::KeyPair::from_pem(&pem).expect("pem").public_key_pem();
    jsonwebtoken::decode::<Claims>(
        &token,
        &DecodingKey::from_ed_pem(public.as_bytes()).expect("public"),
        &validation,
    )
    .expect("signed with the old key");
    let jwks = client.get_jwks(GetJwksRequest {}).await.expect("jwks").into_inner();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(
        jsonwebtoken::decode_header(&token).expect("header").kid,
        Some(jwks.keys[0].kid.clone())
    );
}

#[tokio::test]
async fn tokens_carry_audience_roles_and_a_kid_that_the_jwks_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        audience: "shop-api".into(),
        admin_emails: vec!["boss@example.com".into()],
        ..Settings::default()
    };
    let service = meshwork_users::service_with(dir.path(), settings)
        .await
        .expect("service");
    let server = TestServer::start(tonic::service::Routes::new(service), &[meshwork_users::GRPC_SERVICE])
        .await
        .expect("server");
    let mut client = UserServiceClient::new(server.channel());
    let boss = register(&mut client, "Boss@example.com", "correct horse")
        .await
        .expect("register");
    assert_eq!(boss.roles, ["admin"]);
    let ann = register(&mut client, "ann@example.com", "correct horse")
        .await
        .expect("register");
    assert!(ann.roles.is_empty());

    let jwks = client.get_jwks(GetJwksRequest {}).await.expect("jwks").into_inner();
    assert_eq!(jwks.keys.len(), 1);
    let jwk = &jwks.keys[0];
    assert_eq!(
        (jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str(), jwk.r#use.as_str()),
        ("OKP", "Ed25519", "EdDSA", "sig")
    );
    let key = DecodingKey::from_ed_components(&jwk.x).expect("x");
    for (email, roles) in [
        ("boss@example.com", vec!["admin".to_string()]),
        ("ann@example.com", vec![]),
    ] {
        let login = client
            .login(LoginRequest {
                email: email.into(),
                password: "correct horse".into(),
            })
            .await
            .expect("login")
            .into_inner();
        assert_eq!(login.user.as_ref().map(|u| &u.roles), Some(&roles));
        let header = jsonwebtoken::decode_header(&login.access_token).expect("header");
        assert_eq!(header.kid.as_deref(), Some(jwk.kid.as_str()));
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[meshwork_users::TOKEN_ISSUER]);
        validation.set_audience(&["shop-api"]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<FullClaims>(&login.access_token, &key, &validation)
            .expect("verifies with the JWKS key")
            .claims;
        assert_eq!(claims.roles, roles);
        assert_eq!(claims.nbf, claims.iat);
        assert_eq!(claims.exp - claims.iat, meshwork_users::TOKEN_TTL.as_secs() as i64);
    }
}

#[derive(serde::Deserialize)]
struct FullClaims {
    iat: i64,
    nbf: i64,
    exp: i64,
    roles: Vec<String>,
}

/// `message` sent on behalf of end user `user`, as the gateway sends it.
fn as_user<T>(user: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(END_USER_HEADER, user.parse().expect("ascii id"));
    request
}

#[tokio::test]
async fn an_end_user_reaches_only_their_own_account() {
    let Fixture {
        mut client,
        dir: _dir,
        _server: _running,
    } = start().await;
    let ann = register(&mut client, "ann@example.com", "correct horse")
        .await
        .expect("ann");
    let bob = register(&mut client, "bob@example.com", "correct horse")
        .await
        .expect("bob");
    let get = |id: &str| GetUserRequest { user_id: id.into() };
    let got = client
        .get_user(as_user(&ann.id, get(&ann.id)))
        .await
        .expect("own profile");
    assert_eq!(got.into_inner().id, ann.id);
    let denied = client
        .get_user(as_user(&ann.id, get(&bob.id)))
        .await
        .expect_err("another's profile");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        format!("user {} may not read the profile of user {}", ann.id, bob.id)
    );
    let update = UpdatePreferencesRequest {
        user_id: bob.id.clone(),
        preferences: Some(Preferences {
            locale: "fr-FR".into(),
            currency: "EUR".into(),
        }),
    };
    let denied = client
        .update_preferences(as_user(&ann.id, update.clone()))
        .await
        .expect_err("another's preferences");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("may not change the preferences"),
        "{}",
        denied.message()
    );
    client
        .update_preferences(as_user(&bob.id, update))
        .await
        .expect("own preferences");
    // Without the header the caller is a mesh workload on its own authority.
    client.get_user(get(&bob.id)).await.expect("a workload reads any user");
}
