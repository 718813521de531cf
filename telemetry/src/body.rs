//! A response body wrapper that tells an observer, once, how the call ended:
//! its final gRPC status and the bytes sent. It streams every frame through
//! untouched (never buffers) and only looks at trailers as they pass, so
//! spans and metrics end when the response stream ends, not when headers
//! arrive. A body dropped before its end (the caller went away) reports
//! CANCELLED.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Buf as _;
use http_body::{Body, Frame, SizeHint};

use crate::grpc_status;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The final gRPC status code.
    pub code: u8,
    /// Response body bytes passed through.
    pub bytes: u64,
}

/// Told once, when the body ends (or is dropped).
pub trait OnEnd {
    fn on_end(self, end: End);
}

pub struct ObservedBody<B, O: OnEnd> {
    inner: B,
    observer: Option<O>,
    /// The status the response head already decided (trailers-only), if any.
    status: Option<u8>,
    bytes: u64,
}

impl<B, O: OnEnd> ObservedBody<B, O> {
    /// `status` is what the response head decided, if anything
    /// ([`grpc_status::from_response_head`]).
    pub fn new(inner: B, status: Option<u8>, observer: O) -> Self {
        ObservedBody {
            inner,
            observer: Some(observer),
            status,
            bytes: 0,
        }
    }

    fn finish(&mut self, code: u8) {
        if let Some(observer) = self.observer.take() {
            observer.on_end(End {
                code,
                bytes: self.bytes,
            });
        }
    }

    /// Ended normally: the status seen, else UNKNOWN (a gRPC response without
    /// any status is a broken one).
    fn finish_complete(&mut self) {
        self.finish(self.status.unwrap_or(grpc_status::UNKNOWN));
    }
}

impl<B, O> Body for ObservedBody<B, O>
where
    B: Body + Unpin,
    O: OnEnd + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(None) => this.finish_complete(),
            Poll::Ready(Some(Err(_))) => this.finish(grpc_status::UNAVAILABLE),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.remaining() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(code) = grpc_status::from_headers(trailers) {
                        this.status = Some(code);
                    }
                    // Trailers are the last frame.
                    this.finish_complete();
                }
                if this.observer.is_some() && this.inner.is_end_stream() {
                    this.finish_complete();
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, O: OnEnd> Drop for ObservedBody<B, O> {
    fn drop(&mut self) {
        if self.observer.is_none() {
            return;
        }
        // Dropped at its end without being polled (hyper does not poll a body
        // that reports end of stream, as a trailers-only response's does), or
        // abandoned halfway: the caller cancelled.
        match self.status {
            Some(code) if self.bytes == 0 => self.finish(code),
            _ => self.finish(grpc_status::CANCELLED),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};
    use http_body_util::{BodyExt, Empty, StreamBody};

    use super::*;

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<End>>>);

    impl OnEnd for Seen {
        fn on_end(self, end: End) {
            self.0.lock().expect("lock").push(end);
        }
    }

    impl Seen {
        fn ends(&self) -> Vec<End> {
            self.0.lock().expect("lock").clone()
        }
    }

    fn trailers(code: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static(code));
        h
    }

    type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>;

    fn stream(frames: Vec<Frame<Bytes>>) -> StreamBody<Frames> {
        StreamBody::new(futures::stream::iter(frames.into_iter().map(Ok).collect::<Vec<_>>()))
    }

    #[tokio::test]
    async fn reports_status_from_trailers_once_at_the_end() {
        let seen = Seen::default();
        let body = stream(vec![
            Frame::data(Bytes::from_static(b"hello")),
            Frame::data(Bytes::from_static(b"!")),
            Frame::trailers(trailers("5")),
        ]);
        let observed = ObservedBody::new(body, None, seen.clone());
        let collected = observed.collect().await.expect("body");
        assert_eq!(
            collected.trailers().map(|t| t["grpc-status"].clone()),
            Some(HeaderValue::from_static("5"))
        );
        assert_eq!(seen.ends(), vec![End { code: 5, bytes: 6 }]);
    }

    #[tokio::test]
    async fn trailers_only_is_reported_when_dropped_unpolled() {
        let seen = Seen::default();
        drop(ObservedBody::new(Empty::<Bytes>::new(), Some(7), seen.clone()));
        assert_eq!(seen.ends(), vec![End { code: 7, bytes: 0 }]);
    }

    #[tokio::test]
    async fn abandoned_stream_is_cancelled() {
        let seen = Seen::default();
        let body = stream(vec![
            Frame::data(Bytes::from_static(b"a")),
            Frame::data(Bytes::from_static(b"b")),
        ]);
        let mut observed = ObservedBody::new(body, None, seen.clone());
        let _first = observed.frame().await;
        assert!(seen.ends().is_empty());
        drop(observed);
        assert_eq!(seen.ends(), vec![End { code: 1, bytes: 1 }]);
    }

    #[tokio::test]
    async fn end_without_status_is_unknown() {
        let seen = Seen::default();
        let body = stream(vec![Frame::data(Bytes::from_static(b"a"))]);
        let _ = ObservedBody::new(body, None, seen.clone()).collect().await;
        assert_eq!(seen.ends(), vec![End { code: 2, bytes: 1 }]);
    }
}
