//! The gRPC face of the users service: validates requests, calls the store, the
//! password hasher and the token signer, and maps the results to messages. A
//! call on behalf of an end user (the gateway's header) reaches only that
//! user's own account.

use std::{path::Path, sync::Arc};

use meshwork_proto::users::{
    AuthorizeRequest, AuthorizeResponse, ExchangeCodeRequest, GetClientRequest, GetJwksRequest, GetUserRequest, Jwks,
    LoginRequest, LoginResponse, OAuthClient, Preferences, RegisterClientRequest, RegisterRequest, RegisterResponse,
    UpdatePreferencesRequest, User, user_service_server::UserService,
};
use meshwork_service_kit::{
    end_user::require_user,
    time::{now_millis, timestamp},
};
use tonic::{Request, Response, Status};

use crate::{
    Error,
    db::{NewUser, Store, UserRow},
    keys::{self, Signer},
    oauth, password,
    settings::Settings,
    validate,
};

/// The users service over its store and signing keys.
#[derive(Debug, Clone)]
pub struct Users {
    store: Store,
    signer: Arc<Signer>,
    settings: Arc<Settings>,
}

impl Users {
    /// Opens (or creates) the accounts and the signing keys in `database`
    /// (the public key file goes in `data_dir`), keeps the key set current
    /// and rotates it while running if `settings` say so (until dropped).
    pub async fn open(
        data_dir: &Path,
        database: &meshwork_service_kit::Database,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let store = Store::open(database).await?;
        let signer = Arc::new(Signer::load_or_create(store.keys(), data_dir, &settings).await?);
        if let Some(every) = settings.key_rotation {
            // Each key stays published for a token lifetime after it is replaced.
            let published = settings.token_ttl.as_secs_f64() / every.as_secs_f64();
            if published > 16.0 {
                tracing::warn!(
                    "rotating the key every {every:?} with tokens valid for {:?} keeps about {published:.0} keys published; \
                     rotate less often than the token lifetime outside tests",
                    settings.token_ttl
                );
            }
        }
        keys::spawn_upkeep(&signer, settings.key_rotation);
        Ok(Users {
            store,
            signer,
            settings: Arc::new(settings),
        })
    }
}

fn to_proto(u: UserRow) -> User {
    User {
        id: u.id,
        email: u.email,
        display_name: u.display_name,
        preferences: Some(Preferences {
            locale: u.locale,
            currency: u.currency,
        }),
        created_at: Some(timestamp(u.created_at_ms)),
        roles: u.roles,
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let req = request.into_inner();
        let email = validate::email(&req.email)?;
        validate::password(&req.password)?;
        let display_name = validate::display_name(&req.display_name)?;
        let password_hash = password::hash(req.password).await?;
        let roles = self.settings.roles_for(&email);
        let user = self
            .store
            .insert(NewUser {
                id: uuid::Uuid::now_v7().to_string(),
                email,
                display_name,
                password_hash,
                created_at_ms: now_millis(),
                roles,
            })
            .await?;
        tracing::info!(user_id = %user.id, "registered");
        Ok(Response::new(RegisterResponse {
            user: Some(to_proto(user)),
        }))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let req = request.into_inner();
        let user = self.check_password(&req.email, req.password).await?;
        let signed = self.signer.sign(&user.id, &user.roles, now_millis() / 1000)?;
        Ok(Response::new(login_response(signed, user)))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        require_user(&request, &request.get_ref().user_id, "read the profile")?;
        let id = request.into_inner().user_id;
        validate::user_id(&id)?;
        Ok(Response::new(to_proto(self.store.get(id).await?)))
    }

    async fn update_preferences(&self, request: Request<UpdatePreferencesRequest>) -> Result<Response<User>, Status> {
        require_user(&request, &request.get_ref().user_id, "change the preferences")?;
        let req = request.into_inner();
        validate::user_id(&req.user_id)?;
        let prefs = req
            .preferences
            .ok_or_else(|| Error::invalid("preferences", "is required"))?;
        let locale = validate::locale(&prefs.locale)?;
        validate::currency(&prefs.currency)?;
        let user = self.store.set_preferences(req.user_id, locale, prefs.currency).await?;
        Ok(Response::new(to_proto(user)))
    }

    async fn get_jwks(&self, _: Request<GetJwksRequest>) -> Result<Response<Jwks>, Status> {
        Ok(Response::new(self.signer.jwks().await?))
    }

    async fn register_client(&self, request: Request<RegisterClientRequest>) -> Result<Response<OAuthClient>, Status> {
        let req = request.into_inner();
        oauth::check_registration(&req.client_name, &req.redirect_uris)?;
        let client = oauth::insert_client(&self.store.db, req.client_name.trim(), &req.redirect_uris).await?;
        tracing::info!(client_id = %client.client_id, name = %client.client_name, "OAuth client registered");
        Ok(Response::new(client_to_proto(client)))
    }

    async fn get_client(&self, request: Request<GetClientRequest>) -> Result<Response<OAuthClient>, Status> {
        let client = oauth::client(&self.store.db, &request.into_inner().client_id).await?;
        Ok(Response::new(client_to_proto(client)))
    }

    async fn authorize(&self, request: Request<AuthorizeRequest>) -> Result<Response<AuthorizeResponse>, Status> {
        let req = request.into_inner();
        let client = oauth::client(&self.store.db, &req.client_id).await?;
        if !client.redirect_uris.contains(&req.redirect_uri) {
            return Err(Error::invalid(
                "redirect_uri",
                format!("'{}' is not one the client registered", req.redirect_uri),
            )
            .into());
        }
        oauth::check_challenge(&req.code_challenge, &req.code_challenge_method)?;
        let scope = oauth::granted_scope(&req.scope)?;
        let user = self.check_password(&req.email, req.password).await?;
        let grant = oauth::Grant {
            user_id: user.id.clone(),
            client_id: client.client_id,
            redirect_uri: req.redirect_uri,
            code_challenge: req.code_challenge,
            resource: req.resource,
            scope,
        };
        let code = oauth::insert_code(&self.store.db, &grant).await?;
        tracing::info!(user_id = %user.id, client_id = %grant.client_id, "OAuth code issued");
        Ok(Response::new(AuthorizeResponse { code, user_id: user.id }))
    }

    async fn exchange_code(&self, request: Request<ExchangeCodeRequest>) -> Result<Response<LoginResponse>, Status> {
        let req = request.into_inner();
        let grant = oauth::take_code(&self.store.db, &req.code).await?;
        let mismatch = |what: &str| Err(Error::InvalidGrant(format!("the code was issued for another {what}")));
        if grant.client_id != req.client_id {
            return mismatch("client").map_err(Status::from);
        }
        if grant.redirect_uri != req.redirect_uri {
            return mismatch("redirect_uri").map_err(Status::from);
        }
        if !req.resource.is_empty() && grant.resource != req.resource {
            return mismatch("resource").map_err(Status::from);
        }
        if !oauth::verifier_matches(&req.code_verifier, &grant.code_challenge) {
            return Err(Error::InvalidGrant("the code_verifier does not match the code_challenge".into()).into());
        }
        let user = self.store.get(grant.user_id).await?;
        let audience = if grant.resource.is_empty() {
            self.settings.audience.as_str()
        } else {
            grant.resource.as_str()
        };
        let signed = self
            .signer
            .sign_for(&user.id, &user.roles, now_millis() / 1000, audience, &grant.scope)?;
        Ok(Response::new(login_response(signed, user)))
    }
}

impl Users {
    /// The account of `email` if `password` is its password; one answer for
    /// a wrong email and a wrong password, after the same hashing work.
    async fn check_password(&self, email: &str, password: String) -> Result<UserRow, Error> {
        // A malformed email cannot have an account; answer as for any unknown email.
        let found = match validate::email(email) {
            Ok(email) => self.store.by_email(email).await?,
            Err(_) => None,
        };
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let ok = password::verify(password, hash).await?;
        match user {
            Some(user) if ok => Ok(user),
            _ => Err(Error::BadCredentials),
        }
    }
}

/// A signed token (and its expiry, Unix seconds) for `user`, as Login and
/// ExchangeCode answer.
fn login_response((access_token, exp): (String, i64), user: UserRow) -> LoginResponse {
    LoginResponse {
        access_token,
        expires_at: Some(prost_types::Timestamp { seconds: exp, nanos: 0 }),
        user: Some(to_proto(user)),
    }
}

fn client_to_proto(c: oauth::Client) -> OAuthClient {
    OAuthClient {
        client_id: c.client_id,
        client_name: c.client_name,
        redirect_uris: c.redirect_uris,
        created_at: Some(timestamp(c.created_at_ms)),
    }
}
