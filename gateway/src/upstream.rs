//! The way into the mesh: one HTTP/2 channel to the gateway's own sidecar
//! (its outbound port on loopback), which does mTLS, SPIFFE checks,
//! deadlines, safe retries, balancing and client spans, as for every app.
//! What the gateway adds to each call is said here once: the verified end
//! user (always overwritten, never taken from outside), the trace context,
//! and W3C `baggage` that only the gateway writes: the verified user id
//! (`user.id`) and, where the front end has one, the session id
//! (`session.id`); a client's own `baggage` never enters. Services read it
//! through `meshwork_service_kit::context`.

use std::{net::SocketAddr, time::Duration};

use http::{HeaderMap, HeaderValue};
use meshwork_config::END_USER_HEADER;
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
