//! The one response body type every layer returns: either the peer's body,
//! streamed through untouched, or an empty body for a status the proxy
//! answers itself. An enum rather than a boxed body: no allocation per call.

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;

pub type ProxyBody = Either<Incoming, Empty<Bytes>>;

pub fn empty() -> ProxyBody {
    Either::Right(Empty::new())
}
