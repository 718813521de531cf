//! The one response body type every layer returns: either the peer's body,
//! streamed through untouched, or a body the proxy holds itself ([`Held`]):
//! empty for a status the proxy answers, or a response the retry layer read
//! ahead (up to its cap) to find its `grpc-status` before letting it go.
//! An enum rather than a boxed body: no allocation per call.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use hyper::body::Incoming;

pub type ProxyBody = Either<Incoming, Held>;

pub fn empty() -> ProxyBody {
    Either::Right(Held::default())
}

/// What was read ahead of a response, then the rest of it: `data`, then
/// `rest` (if the read stopped early), then `trailers` (if the read reached
/// them). Empty by default.
#[derive(Debug, Default)]
pub struct Held {
    data: Option<Bytes>,
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
}

impl Held {
    /// A body read to its end: its data and its trailers.
    pub fn complete(data: Option<Bytes>, trailers: Option<HeaderMap>) -> Self {
        Held {
            data,
            rest: None,
            trailers,
        }
    }

    /// The start of a body already read, followed by the rest still unread.
    pub fn partial(data: Option<Bytes>, rest: Incoming) -> Self {
        Held {
            data,
            rest: Some(rest),
            trailers: None,
        }
    }
}

impl Body for Held {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(rest) = this.rest.as_mut() {
            match Pin::new(rest).poll_frame(cx) {
                Poll::Ready(None) => this.rest = None,
                other => return other,
            }
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        prefixed_size_hint(self.data.as_ref(), self.rest.as_ref())
    }
}

/// The size of `held` bytes followed by what is left of `rest`.
pub fn prefixed_size_hint(held: Option<&Bytes>, rest: Option<&Incoming>) -> SizeHint {
    let held = held.map_or(0, |d| d.len() as u64);
    let Some(rest) = rest else {
        return SizeHint::with_exact(held);
    };
    let inner = rest.size_hint();
    let mut hint = SizeHint::new();
    hint.set_lower(inner.lower() + held);
    if let Some(upper) = inner.upper() {
        hint.set_upper(upper + held);
    }
    hint
}
