//! The way into the mesh: one HTTP/2 channel to the gateway's own sidecar
//! (its outbound port on loopback), which does mTLS, SPIFFE checks,
//! deadlines, safe retries, balancing and client spans, as for every app.
//! What the gateway adds to each call is said here once: the verified end
//! user (always overwritten, never taken from outside), the trace context,
//! and no `baggage` from outside.

use std::{net::SocketAddr, time::Duration};

use http::{HeaderMap, HeaderValue};
use meshwork_config::END_USER_HEADER;
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

/// Makes `headers` fit to enter the mesh: the end user is the verified
/// principal or nobody, and context comes only from the gateway.
pub fn into_mesh(headers: &mut HeaderMap, principal: Option<&Principal>, trace: &opentelemetry::Context) {
    headers.remove(END_USER_HEADER);
    headers.remove("baggage");
    // Outside trace headers were read into `trace` already; what goes on is ours.
    headers.remove("traceparent");
    headers.remove("tracestate");
    if let Some(principal) = principal
        && let Ok(value) = HeaderValue::from_str(&principal.user_id)
    {
        headers.insert(END_USER_HEADER, value);
    }
    meshwork_telemetry::propagation::inject(trace, headers);
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
