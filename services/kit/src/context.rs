//! The context of the call a service is serving, as the gateway attached it
//! when the call entered the mesh: W3C `baggage` with the verified user id
//! (`user.id`), the client's session (`session.id`, where its protocol has
//! one) and the user's `locale` and `currency` preferences. The one place
//! services read it; never from a request body.
//!
//! It is trusted as [`end_user`](crate::end_user) is: the gateway drops any
//! `baggage` a client sends and writes its own, and inbound sidecars let
//! only mesh identities in. Services pass it on to their own calls as it
//! came ([`propagate`](crate::propagate)).

use opentelemetry::{
    baggage::BaggageExt,
    propagation::{Extractor, TextMapPropagator},
};
use opentelemetry_sdk::propagation::BaggagePropagator;
use tonic::metadata::MetadataMap;

/// The baggage keys read here (the gateway's `upstream` writes them).
pub const USER_ID: &str = "user.id";
pub const SESSION_ID: &str = "session.id";
pub const LOCALE: &str = "locale";
pub const CURRENCY: &str = "currency";

/// What a call carries about who it is for; each part may be absent (a call
/// from a workload on its own authority carries none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub locale: Option<String>,
    pub currency: Option<String>,
}

/// The context in a request's metadata (its `baggage` header).
pub fn context_in(metadata: &MetadataMap) -> CallContext {
    if metadata.get(meshwork_telemetry::propagation::BAGGAGE).is_none() {
        return CallContext::default();
    }
    let cx = BaggagePropagator::new().extract(&Metadata(metadata));
    let baggage = cx.baggage();
    let get = |key: &str| {
        baggage
            .get(key)
            .map(|v| v.as_str().to_string())
            .filter(|v| !v.is_empty())
    };
    CallContext {
        user_id: get(USER_ID),
        session_id: get(SESSION_ID),
        locale: get(LOCALE),
        currency: get(CURRENCY),
    }
}

/// The context of `request`.
pub fn context<T>(request: &tonic::Request<T>) -> CallContext {
    context_in(request.metadata())
}

struct Metadata<'a>(&'a MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gateways_baggage() {
        let mut metadata = MetadataMap::new();
        assert_eq!(context_in(&metadata), CallContext::default());
        metadata.insert(
            "baggage",
            "user.id=u%202, session.id=s-9;prop=1, currency=EUR, other=x"
                .parse()
                .expect("ascii"),
        );
        assert_eq!(
            context_in(&metadata),
            CallContext {
                user_id: Some("u 2".into()),
                session_id: Some("s-9".into()),
                locale: None,
                currency: Some("EUR".into()),
            }
        );
        metadata.insert("baggage", "not baggage at all".parse().expect("ascii"));
        assert_eq!(context_in(&metadata), CallContext::default());
    }
}
