//! The bodies the proxy moves. Every body it receives arrives on an
//! HTTP/2 stream ([`RecvBody`]): a request from the app or a peer sidecar,
//! or an upstream's response. The one response body type every layer
//! returns is either such an upstream body, streamed through untouched, or
//! a body the proxy holds itself ([`Held`]):
//! empty for a status the proxy answers, or a response the retry layer read
//! ahead (up to its cap) to find its `grpc-status` before letting it go.
//! An enum rather than a boxed body: no allocation per call.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use h2::RecvStream;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use tokio::sync::oneshot;

pub type ProxyBody = Either<RecvBody, Held>;

pub fn empty() -> ProxyBody {
    Either::Right(Held::default())
}

/// What was read ahead of a response, then the rest of it: `data`, then
/// `rest` (if the read stopped early), then `trailers` (if the read reached
/// them). Empty by default.
#[derive(Debug, Default)]
pub struct Held {
    data: Option<Bytes>,
    rest: Option<RecvBody>,
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
    pub fn partial(data: Option<Bytes>, rest: RecvBody) -> Self {
        Held {
            data,
            rest: Some(rest),
            trailers: None,
        }
    }
}

impl Body for Held {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
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
pub fn prefixed_size_hint(held: Option<&Bytes>, rest: Option<&impl Body>) -> SizeHint {
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

/// A body arriving on an HTTP/2 stream: the data, each chunk's
/// flow-control window given back as it is passed on, then the trailers.
#[derive(Debug)]
pub struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    /// For an upstream's response to a streaming call: dropped with the
    /// body, which stops the task still sending the request body (see
    /// `pipe.rs`).
    _request_pipe: Option<oneshot::Sender<()>>,
}

impl RecvBody {
    pub fn new(recv: RecvStream) -> Self {
        Self::response(recv, None)
    }

    /// An upstream's response, whose request body `request_pipe`'s task
    /// may still be sending.
    pub fn response(recv: RecvStream, request_pipe: Option<oneshot::Sender<()>>) -> Self {
        RecvBody {
            recv,
            data_done: false,
            _request_pipe: request_pipe,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    // The window is given back as the data moves on: the
                    // receiving side's flow control then paces the sender.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => this.data_done = true,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(trailers)) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
