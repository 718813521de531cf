//! The request body of a call that may be sent more than once. A
//! single-message request (unary, server-streaming) is read ahead up to the
//! replay cap and kept, so every attempt can send it again; a larger one is
//! sent once, what was read followed by the rest of the stream. Requests
//! that stream (client-streaming, bidi) are never read ahead: their caller
//! may wait for a response before it sends more.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use crate::body::RecvBody;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::{body::prefixed_size_hint, gather::Gathered};

/// A request body kept whole, to be sent by each attempt.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Replay {
    /// A fresh body for one attempt (cloning `Bytes` copies no data).
    pub fn body(&self) -> ReplayBody {
        ReplayBody::Buffered {
            data: self.data.clone(),
            trailers: self.trailers.clone(),
        }
    }
}

/// What reading ahead found.
pub enum ReadAhead {
    /// The whole body, within the cap.
    Complete(Replay),
    /// Over the cap: the part read, and the rest still to stream.
    TooLarge(ReplayBody),
    /// The caller's stream broke.
    Failed(h2::Error),
}

/// Reads `body` until it ends or passes `cap` bytes.
pub async fn read_ahead(mut body: RecvBody, cap: usize) -> ReadAhead {
    let mut gathered = Gathered::default();
    let mut trailers = None;
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else { break };
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => return ReadAhead::Failed(error),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                break;
            }
        };
        gathered.push(data);
        if gathered.len() > cap {
            return ReadAhead::TooLarge(ReplayBody::Once {
                prefix: gathered.into_bytes(),
                rest: Some(body),
            });
        }
    }
    ReadAhead::Complete(Replay {
        data: gathered.into_bytes(),
        trailers,
    })
}

/// The body of one attempt.
#[derive(Debug)]
pub enum ReplayBody {
    /// A copy of a kept body.
    Buffered {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// Sent once: what was read ahead (if anything), then the rest.
    Once {
        prefix: Option<Bytes>,
        rest: Option<RecvBody>,
    },
}

impl ReplayBody {
    /// A body passed through untouched.
    pub fn once(body: RecvBody) -> Self {
        ReplayBody::Once {
            prefix: None,
            rest: Some(body),
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        match self.get_mut() {
            ReplayBody::Buffered { data, trailers } => Poll::Ready(match data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            ReplayBody::Once { prefix, rest } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                match rest.as_mut() {
                    Some(rest) => Pin::new(rest).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplayBody::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            ReplayBody::Once { prefix, rest } => prefix.is_none() && rest.as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplayBody::Buffered { data, .. } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            ReplayBody::Once { prefix, rest } => prefixed_size_hint(prefix.as_ref(), rest.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffered_bodies_replay_data_then_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", "1".parse().expect("value"));
        let replay = Replay {
            data: Some(Bytes::from_static(b"hello")),
            trailers: Some(trailers),
        };
        for _ in 0..2 {
            let body = replay.body();
            assert_eq!(body.size_hint().exact(), Some(5));
            let collected = body.collect().await.expect("infallible");
            assert_eq!(
                collected.trailers().map(|t| t["x-t"].clone()),
                Some("1".parse().expect("value"))
            );
            assert_eq!(collected.to_bytes(), Bytes::from_static(b"hello"));
        }
        let empty = Replay::default().body();
        assert!(empty.is_end_stream());
    }
}
