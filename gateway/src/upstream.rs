//! The way into the mesh: one HTTP/2 channel to the gateway's own sidecar
//! (its outbound port on loopback), which does mTLS, SPIFFE checks,
//! deadlines, safe retries, balancing and client spans, as for every app.
//! What the gateway adds to each call is said here once: the verified end
//! user (always overwritten, never taken from outside), the trace context,
//! and W3C `baggage` that only the gateway writes: the verified user id
//! (`user.id`) and, where the front end has one, the session id
//! (`session.id`), and the user's `locale` and `currency` from the users
//! service ([`Preferences`], kept briefly); a client's own `baggage` never
//! enters. Services read it through `meshwork_service_kit::context`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue};
use meshwork_config::END_USER_HEADER;
use meshwork_proto::users::{GetUserRequest, user_service_client::UserServiceClient};
use opentelemetry::{KeyValue, baggage::BaggageExt};
use tonic::transport::{Channel, Endpoint};

use crate::auth::Principal;

/// A channel to the sidecar's outbound port; it connects on first use and
/// reconnects by itself.
pub fn channel(outbound: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{outbound}"))
        .map(|e| {
            e.connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_adaptive_window(true)
        })
        .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:1"))
        .connect_lazy()
}

/// The baggage key of the verified user id (OpenTelemetry's semantic name).
pub const BAGGAGE_USER: &str = "user.id";
/// The baggage key of the client's session, where its protocol has one.
pub const BAGGAGE_SESSION: &str = "session.id";

/// `trace` carrying the session id as baggage, for [`into_mesh`] to send.
pub fn with_session(trace: &opentelemetry::Context, session: &str) -> opentelemetry::Context {
    with_entries(trace, [KeyValue::new(BAGGAGE_SESSION, session.to_string())])
}

/// `trace`'s baggage (only ever the gateway's own) and `entries`.
fn with_entries(trace: &opentelemetry::Context, entries: impl IntoIterator<Item = KeyValue>) -> opentelemetry::Context {
    let kept = trace
        .baggage()
        .iter()
        .map(|(key, (value, _))| KeyValue::new(key.clone(), value.clone()));
    trace.with_baggage(kept.chain(entries).collect::<Vec<_>>())
}

/// The baggage keys of the user's preferences.
pub const BAGGAGE_LOCALE: &str = "locale";
pub const BAGGAGE_CURRENCY: &str = "currency";

/// The users service's method that changes them.
pub const UPDATE_PREFERENCES: &str = "/shop.users.v1.UserService/UpdatePreferences";

/// How long a user's preferences are kept before they are read again.
pub const PREFERENCES_TTL: Duration = Duration::from_secs(10);
/// Users kept at most; past it the table starts afresh.
const MAX_KEPT: usize = 10_000;
/// A read of them that takes longer is given up: the call goes on without.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// While a change of a user's preferences may be under way, what is read of
/// them is not kept (the change may not have landed yet).
const CHANGE_WINDOW: Duration = Duration::from_secs(30);

/// Each signed-in user's locale and currency, read from the users service
/// (`GetUser`, as that user, through the gateway's sidecar) and kept for
/// [`PREFERENCES_TTL`]. A call of [`UPDATE_PREFERENCES`] through the gateway
/// drops what is kept and keeps nothing for [`CHANGE_WINDOW`], so the next
/// call sees the change; one made elsewhere is seen within the TTL.
pub struct Preferences {
    users: Channel,
    ttl: Duration,
    kept: Mutex<HashMap<String, Kept>>,
}

type Entries = Arc<[KeyValue; 2]>;

enum Kept {
    /// Read at this time (`None`: they could not be read).
    Read(Instant, Option<Entries>),
    /// A change was sent; read afresh each time until then.
    Changing(Instant),
}

impl Preferences {
    pub fn new(users: Channel, ttl: Duration) -> Self {
        Preferences {
            users,
            ttl,
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// `trace` with the principal's locale and currency as baggage, for a
    /// call of the method at `path` (as it is when there is no principal or
    /// they cannot be read).
    pub async fn with_user_context(
        &self,
        trace: &opentelemetry::Context,
        principal: Option<&Principal>,
        path: &str,
    ) -> opentelemetry::Context {
        let Some(principal) = principal else {
            return trace.clone();
        };
        if path == UPDATE_PREFERENCES
            && let Ok(mut kept) = self.kept.lock()
        {
            kept.insert(
                principal.user_id.clone(),
                Kept::Changing(Instant::now() + CHANGE_WINDOW),
            );
        }
        match self.of(&principal.user_id).await {
            Some(entries) => with_entries(trace, entries.iter().cloned()),
            None => trace.clone(),
        }
    }

    async fn of(&self, user_id: &str) -> Option<Entries> {
        let mut keep = true;
        if let Ok(kept) = self.kept.lock() {
            match kept.get(user_id) {
                Some(Kept::Read(at, entries)) if at.elapsed() < self.ttl => return entries.clone(),
                Some(Kept::Changing(until)) if Instant::now() < *until => keep = false,
                _ => {}
            }
        }
        let entries = self.read(user_id).await.map(Arc::new);
        if keep && let Ok(mut kept) = self.kept.lock() {
            if kept.len() >= MAX_KEPT {
                kept.clear();
            }
            kept.insert(user_id.to_string(), Kept::Read(Instant::now(), entries.clone()));
        }
        entries
    }

    async fn read(&self, user_id: &str) -> Option<[KeyValue; 2]> {
        let mut request = tonic::Request::new(GetUserRequest {
            user_id: user_id.to_string(),
        });
        request.set_timeout(READ_TIMEOUT);
        if let Ok(value) = tonic::metadata::MetadataValue::try_from(user_id) {
            request.metadata_mut().insert(END_USER_HEADER, value);
        }
        match UserServiceClient::new(self.users.clone()).get_user(request).await {
            Ok(user) => {
                let preferences = user.into_inner().preferences.unwrap_or_default();
                Some([
                    KeyValue::new(BAGGAGE_LOCALE, preferences.locale),
                    KeyValue::new(BAGGAGE_CURRENCY, preferences.currency),
                ])
            }
            Err(status) => {
                tracing::debug!(user_id, %status, "gateway: the user's preferences cannot be read; calling without");
                None
            }
        }
    }
}

/// The preferences `trace` carries as baggage (as [`Preferences`] put
/// them there), as one string for the cache's key; None without any.
pub fn preferences_in(trace: &opentelemetry::Context) -> Option<Arc<str>> {
    use opentelemetry::baggage::BaggageExt;
    let baggage = trace.baggage();
    let locale = baggage.get(BAGGAGE_LOCALE).map(|v| v.as_str());
    let currency = baggage.get(BAGGAGE_CURRENCY).map(|v| v.as_str());
    if locale.is_none() && currency.is_none() {
        return None;
    }
    Some(format!("locale={};currency={}", locale.unwrap_or(""), currency.unwrap_or("")).into())
}

/// Makes `headers` fit to enter the mesh: the end user is the verified
/// principal or nobody, and context comes only from the gateway.
pub fn into_mesh(headers: &mut HeaderMap, principal: Option<&Principal>, trace: &opentelemetry::Context) {
    headers.remove(END_USER_HEADER);
    headers.remove("baggage");
    // Outside trace headers were read into `trace` already; what goes on is ours.
    headers.remove("traceparent");
    headers.remove("tracestate");
    let Some(principal) = principal else {
        meshwork_telemetry::propagation::inject(trace, headers);
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&principal.user_id) {
        headers.insert(END_USER_HEADER, value);
    }
    // The extracted outside context holds no baggage (propagation::extract
    // reads trace context only), so all `trace` carries is the gateway's.
    let cx = with_entries(trace, [KeyValue::new(BAGGAGE_USER, principal.user_id.clone())]);
    meshwork_telemetry::propagation::inject(&cx, headers);
}

/// The deadline a client asked for with `grpc-timeout`, capped by the
/// gateway's own; the gateway's when it asked for none.
pub fn deadline(headers: &HeaderMap, cap: Duration) -> Duration {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(cap, |asked| asked.min(cap))
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_identity_and_context_never_enter() {
        let mut headers = HeaderMap::new();
        headers.insert(END_USER_HEADER, HeaderValue::from_static("someone-else"));
        headers.insert("baggage", HeaderValue::from_static("user=admin"));
        into_mesh(&mut headers, None, &opentelemetry::Context::new());
        assert!(headers.get(END_USER_HEADER).is_none());
        assert!(headers.get("baggage").is_none());
        let me = Principal {
            user_id: "u-1".into(),
            roles: vec![],
            scopes: vec![],
        };
        headers.insert(END_USER_HEADER, HeaderValue::from_static("someone-else"));
        into_mesh(&mut headers, Some(&me), &opentelemetry::Context::new());
        assert_eq!(headers.get(END_USER_HEADER).unwrap(), "u-1");
        assert_eq!(headers.get("baggage").unwrap(), "user.id=u-1");
    }

    #[test]
    fn baggage_is_the_gateways_own() {
        let me = Principal {
            user_id: "u 2".into(),
            roles: vec![],
            scopes: vec![],
        };
        // What a client sent is read as trace context only: its baggage is gone.
        let mut outside = HeaderMap::new();
        outside.insert("baggage", HeaderValue::from_static("user.id=admin,currency=XXX"));
        let trace = with_session(&meshwork_telemetry::propagation::extract(&outside), "s-9");
        let mut headers = outside.clone();
        into_mesh(&mut headers, Some(&me), &trace);
        let baggage = headers.get("baggage").unwrap().to_str().unwrap();
        let mut entries: Vec<&str> = baggage.split(',').collect();
        entries.sort_unstable();
        assert_eq!(entries, ["session.id=s-9", "user.id=u%202"]);
        // Without a user: no user id, and still nothing from outside.
        let mut headers = outside;
        into_mesh(&mut headers, None, &opentelemetry::Context::new());
        assert!(headers.get("baggage").is_none());
    }

    #[tokio::test]
    async fn preferences_come_from_the_users_service_and_are_forgotten_on_change() {
        use meshwork_proto::users::{
            LoginRequest, Preferences as Prefs, RegisterRequest, UpdatePreferencesRequest,
            user_service_client::UserServiceClient,
        };
        let dir = tempfile::tempdir().unwrap();
        let service = meshwork_users::service_with(
            dir.path(),
            &meshwork_service_kit::Database::sqlite_in(dir.path(), meshwork_users::NAME),
            meshwork_users::Settings::default(),
        )
        .await
        .unwrap();
        let server = meshwork_service_kit::testing::TestServer::start(
            tonic::service::Routes::new(service),
            &[meshwork_users::GRPC_SERVICE],
        )
        .await
        .unwrap();
        let mut users = UserServiceClient::new(server.channel());
        users
            .register(RegisterRequest {
                email: "ada@example.test".into(),
                password: "correct horse".into(),
                display_name: "Ada".into(),
            })
            .await
            .unwrap();
        let id = users
            .login(LoginRequest {
                email: "ada@example.test".into(),
                password: "correct horse".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
            .id;
        let me = Principal {
            user_id: id.clone(),
            roles: vec![],
            scopes: vec![],
        };
        let preferences = Preferences::new(server.channel(), Duration::from_secs(60));
        let baggage = |cx: &opentelemetry::Context| {
            let mut headers = HeaderMap::new();
            into_mesh(&mut headers, Some(&me), cx);
            let mut entries: Vec<String> = headers["baggage"]
                .to_str()
                .unwrap()
                .split(',')
                .map(String::from)
                .collect();
            entries.sort();
            entries
        };
        let root = opentelemetry::Context::new();
        let call = |path: &'static str| preferences.with_user_context(&root, Some(&me), path);
        let first = call("/shop.catalog.v1.CatalogService/GetProduct").await;
        assert_eq!(
            baggage(&first),
            ["currency=USD", "locale=en-US", format!("user.id={id}").as_str()]
        );

        let change = || {
            let mut change = tonic::Request::new(UpdatePreferencesRequest {
                user_id: id.clone(),
                preferences: Some(Prefs {
                    locale: "fr-FR".into(),
                    currency: "EUR".into(),
                }),
            });
            change.metadata_mut().insert(END_USER_HEADER, id.parse().unwrap());
            change
        };
        // A change made elsewhere: what is kept holds until the TTL ends...
        users.update_preferences(change()).await.unwrap();
        let kept = call("/shop.catalog.v1.CatalogService/GetProduct").await;
        assert!(baggage(&kept).contains(&"currency=USD".to_string()));
        // ... a change through the gateway: the next call sees it.
        let _ = call(UPDATE_PREFERENCES).await;
        users.update_preferences(change()).await.unwrap();
        let fresh = call("/shop.catalog.v1.CatalogService/GetProduct").await;
        assert_eq!(
            baggage(&fresh),
            ["currency=EUR", "locale=fr-FR", format!("user.id={id}").as_str()]
        );
        // Nobody signed in: nothing to read.
        let anonymous = preferences
            .with_user_context(&opentelemetry::Context::new(), None, UPDATE_PREFERENCES)
            .await;
        assert!(anonymous.baggage().is_empty());
    }

    #[test]
    fn client_deadlines_are_capped() {
        let cap = Duration::from_secs(30);
        let mut headers = HeaderMap::new();
        assert_eq!(deadline(&headers, cap), cap);
        headers.insert("grpc-timeout", HeaderValue::from_static("250m"));
        assert_eq!(deadline(&headers, cap), Duration::from_millis(250));
        headers.insert("grpc-timeout", HeaderValue::from_static("2H"));
        assert_eq!(deadline(&headers, cap), cap);
        headers.insert("grpc-timeout", HeaderValue::from_static("junk"));
        assert_eq!(deadline(&headers, cap), cap);
    }
}
