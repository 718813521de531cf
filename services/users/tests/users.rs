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
async fn the_signing_key_survives_a_restart_in_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let public = || std::fs::read(dir.path().join(meshwork_users::PUBLIC_KEY_FILE)).expect("public key file");
    let _ = meshwork_users::service(dir.path()).await.expect("first start");
    let first = public();
    let _ = meshwork_users::service(dir.path()).await.expect("second start");
    assert_eq!(public(), first, "the same key signs after a restart");
    assert!(dir.path().join("users.db").exists());
    assert!(
        !dir.path().join(meshwork_users::KEYS_DIR).exists(),
        "no private key is kept as a file"
    );
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
    let service = meshwork_users::service_with(
        dir.path(),
        &meshwork_service_kit::Database::sqlite_in(dir.path(), meshwork_users::NAME),
        settings,
    )
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

/// OAuth 2.1's codes: a registered client, a code for one of its redirect
/// URIs and a PKCE challenge, exchanged once, with the right verifier, for a
/// token whose audience is the resource asked for.
#[tokio::test]
async fn oauth_codes_are_single_use_bound_to_client_pkce_and_resource() {
    use meshwork_proto::users::{AuthorizeRequest, ExchangeCodeRequest, GetClientRequest, RegisterClientRequest};

    let mut fixture = start().await;
    let client = &mut fixture.client;
    let user = register(client, "agent@example.com", "correct horse")
        .await
        .expect("register");
    let refused = client
        .register_client(RegisterClientRequest {
            client_name: "agent".into(),
            redirect_uris: vec!["http://agent.example/cb".into()],
        })
        .await
        .expect_err("plain http off the loopback");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("redirect_uris"), "{}", refused.message());
    let registered = client
        .register_client(RegisterClientRequest {
            client_name: "agent".into(),
            redirect_uris: vec!["http://127.0.0.1:9/cb".into()],
        })
        .await
        .expect("register client")
        .into_inner();
    let got = client
        .get_client(GetClientRequest {
            client_id: registered.client_id.clone(),
        })
        .await
        .expect("get client")
        .into_inner();
    assert_eq!(got.redirect_uris, ["http://127.0.0.1:9/cb"]);

    // RFC 7636 appendix B's pair.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let resource = "http://127.0.0.1:8080/mcp";
    let authorize = |password: &str, redirect_uri: &str| AuthorizeRequest {
        email: "agent@example.com".into(),
        password: password.into(),
        client_id: registered.client_id.clone(),
        redirect_uri: redirect_uri.into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        code_challenge_method: "S256".into(),
        resource: resource.into(),
        scope: String::new(),
    };
    let wrong = client
        .authorize(authorize("wrong password", "http://127.0.0.1:9/cb"))
        .await;
    assert_eq!(wrong.expect_err("bad password").code(), Code::Unauthenticated);
    let elsewhere = client
        .authorize(authorize("correct horse", "http://127.0.0.1:9/other"))
        .await;
    assert_eq!(
        elsewhere.expect_err("unregistered redirect").code(),
        Code::InvalidArgument
    );
    let code = client
        .authorize(authorize("correct horse", "http://127.0.0.1:9/cb"))
        .await
        .expect("authorize")
        .into_inner()
        .code;
    let exchange = |code: &str, verifier: &str| ExchangeCodeRequest {
        code: code.into(),
        code_verifier: verifier.into(),
        client_id: registered.client_id.clone(),
        redirect_uri: "http://127.0.0.1:9/cb".into(),
        resource: resource.into(),
    };
    let token = client
        .exchange_code(exchange(&code, verifier))
        .await
        .expect("exchange")
        .into_inner()
        .access_token;
    let again = client.exchange_code(exchange(&code, verifier)).await.expect_err("used");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(again.message().contains("used already"), "{}", again.message());

    // A second code, with a verifier that is not its challenge's: refused, and spent.
    let code = client
        .authorize(authorize("correct horse", "http://127.0.0.1:9/cb"))
        .await
        .expect("authorize")
        .into_inner()
        .code;
    let bad = client
        .exchange_code(exchange(&code, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK"))
        .await
        .expect_err("wrong verifier");
    assert!(bad.message().contains("code_verifier"), "{}", bad.message());

    // The token is for the resource, and for the user.
    let jwks = client.get_jwks(GetJwksRequest {}).await.expect("jwks").into_inner();
    let key = DecodingKey::from_ed_components(&jwks.keys[0].x).expect("key");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[resource]);
    let claims = jsonwebtoken::decode::<Claims>(&token, &key, &validation).expect("aud is the resource");
    assert_eq!(claims.claims.sub, user.id);
    validation.set_audience(&[meshwork_users::DEFAULT_AUDIENCE]);
    assert!(
        jsonwebtoken::decode::<Claims>(&token, &key, &validation).is_err(),
        "not for the default audience"
    );
}
