//! Sending a body on an HTTP/2 stream, as the stream's send window allows:
//! a request body to an upstream, and a response body back to the caller
//! (see `server.rs`).
//!
//! For a request, what the body has ready at once is sent by the call itself, up to
//! [`EAGER_LIMIT`] bytes: for a unary or server-streaming call that is the
//! whole request (the retry layer has read it ahead), so no task is
//! spawned. h2 queues data beyond the stream's send window, which is why
//! the eager part is capped. Whatever the body has not produced yet (a
//! client stream, a large upload) is piped by a task that waits for the
//! stream's send window before each chunk, so a slow upstream slows the
//! caller instead of filling our memory.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use h2::{Reason, SendStream};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame};
use tokio::sync::oneshot;

use crate::{connection::BoxError, grpc::status::percent_encode};

/// Bytes sent without waiting for the stream's send window.
pub const EAGER_LIMIT: usize = 64 * 1024;

/// Sends `body` on `stream`: what is ready now from the calling task
/// (`cx` is its context), the rest from a pipe task. Returns the handle
/// whose drop stops the pipe task, when one was needed; the response body
/// keeps it.
pub fn send_body<B>(mut body: B, mut stream: SendStream<Bytes>, cx: &mut Context<'_>) -> Option<oneshot::Sender<()>>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let pending = match eager(&mut body, &mut stream, cx) {
        Eager::Done => return None,
        Eager::Waiting(pending) => pending,
    };
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(Pipe {
        body,
        stream,
        pending,
        // What may go without waiting for the window has gone already.
        eager: 0,
        stopped: Some(stopped),
        broken: OnBreak::Reset(Reason::CANCEL),
    });
    Some(stop)
}

enum Eager {
    /// The body ended, failed (the stream was reset), or the stream closed.
    Done,
    /// More is to come; a chunk already read waits for the send window.
    Waiting(Option<Bytes>),
}

/// Sends the frames the body has ready now.
fn eager<B>(body: &mut B, stream: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> Eager
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut sent = 0usize;
    loop {
        let frame = match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => return Eager::Waiting(None),
            Poll::Ready(frame) => frame,
        };
        match on_frame(frame, &*body, stream, OnBreak::Reset(Reason::CANCEL)) {
            Step::Done => return Eager::Done,
            Step::Continue => {}
            Step::Data(data) if sent + data.len() > EAGER_LIMIT => return Eager::Waiting(Some(data)),
            Step::Data(data) => {
                sent += data.len();
                if send_data(stream, data, body.is_end_stream()) {
                    return Eager::Done;
                }
            }
        }
    }
}

enum Step {
    Done,
    Continue,
    /// Data to send (after waiting for the window, in the pipe).
    Data(Bytes),
}

/// How a body that fails without a reset of its own (its connection was
/// lost) ends the stream it is sent on. One that was reset passes its
/// reason on.
#[derive(Debug, Clone, Copy)]
enum OnBreak {
    Reset(Reason),
    /// A gRPC response whose headers have gone: it ends with trailers
    /// saying UNAVAILABLE, as linkerd2-proxy does, which every gRPC client
    /// reads as the call's status. A reset would read as INTERNAL (gRPC's
    /// mapping of `INTERNAL_ERROR`), a fault of the server, when it was the
    /// way to the server that failed.
    GrpcUnavailable,
}

/// What to do with one frame of the body: trailers and the end are sent at
/// once; data is handed back to be sent. A body that fails ends the stream
/// as `broken` says.
fn on_frame<B>(
    frame: Option<Result<Frame<Bytes>, B::Error>>,
    body: &B,
    stream: &mut SendStream<Bytes>,
    broken: OnBreak,
) -> Step
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match frame {
        None => {
            let _ = stream.send_data(Bytes::new(), true);
            Step::Done
        }
        Some(Err(error)) => {
            let error: BoxError = error.into();
            let reset = error.downcast_ref::<h2::Error>().and_then(h2::Error::reason);
            match (reset, broken) {
                (None, OnBreak::GrpcUnavailable) => {
                    tracing::debug!(%error, "response broke off; ending it as UNAVAILABLE");
                    let _ = stream.send_trailers(unavailable(&error));
                }
                (Some(reason), _) | (None, OnBreak::Reset(reason)) => {
                    tracing::debug!(%error, ?reason, "body broke off; resetting the stream it was sent on");
                    stream.send_reset(reason);
                }
            }
            Step::Done
        }
        Some(Ok(frame)) => match frame.into_data() {
            // Asked only of an empty frame: whether the body ended is a
            // lock on the h2 stream for a body that is itself one.
            Ok(data) if data.is_empty() && !body.is_end_stream() => Step::Continue,
            Ok(data) => Step::Data(data),
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                    return Step::Done;
                }
                Step::Continue
            }
        },
    }
}

/// The trailers of a gRPC response that broke off because of `error`.
fn unavailable(error: &BoxError) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert("grpc-status", HeaderValue::from_static("14"));
    let message = percent_encode(&format!("the response broke off upstream: {error}"));
    if let Ok(value) = HeaderValue::try_from(message) {
        trailers.insert("grpc-message", value);
    }
    trailers
}

/// Sends one chunk; true when that ended the request (or the stream is
/// gone and nothing more can be sent).
fn send_data(stream: &mut SendStream<Bytes>, data: Bytes, end: bool) -> bool {
    match stream.send_data(data, end) {
        Ok(()) => end,
        Err(error) => {
            tracing::debug!(%error, "stream closed while sending a body");
            true
        }
    }
}

/// A body (or its rest) sent as the stream's window allows: the rest of a
/// streaming request, in a task of its own; a response, in the stream's
/// own future.
pub struct Pipe<B> {
    body: B,
    stream: SendStream<Bytes>,
    /// A chunk read but not yet sent.
    pending: Option<Bytes>,
    /// Bytes that may still go without waiting for the send window (up to
    /// [`EAGER_LIMIT`]): a unary response is sent at once, without asking
    /// h2 for capacity chunk by chunk.
    eager: usize,
    /// For a request: resolves when the response body is dropped, as the
    /// caller is then gone.
    stopped: Option<oneshot::Receiver<()>>,
    /// How the stream ends when the body fails without a reset of its own.
    broken: OnBreak,
}

impl<B> Pipe<B> {
    /// Sends a response body. One that fails without a reset of its own
    /// ends as UNAVAILABLE when it is a gRPC response (`grpc`), else resets
    /// the stream with `INTERNAL_ERROR`.
    pub fn response(body: B, stream: SendStream<Bytes>, grpc: bool) -> Self {
        Pipe {
            body,
            stream,
            pending: None,
            eager: EAGER_LIMIT,
            stopped: None,
            broken: if grpc {
                OnBreak::GrpcUnavailable
            } else {
                OnBreak::Reset(Reason::INTERNAL_ERROR)
            },
        }
    }
}

impl<B> Pipe<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Sends `data` once the window has room for it (at once within the
    /// eager allowance, or for the empty frame that ends the stream).
    fn send(&mut self, data: Bytes, cx: &mut Context<'_>) -> Sent {
        if data.len() <= self.eager {
            self.eager -= data.len();
        } else {
            self.stream.reserve_capacity(data.len());
            // Until there is room, or the task is registered for it.
            while self.stream.capacity() == 0 {
                match self.stream.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Pending => {
                        self.pending = Some(data);
                        return Sent::Waiting;
                    }
                    Poll::Ready(Some(Err(_)) | None) => return Sent::Ended,
                }
            }
        }
        if send_data(&mut self.stream, data, self.body.is_end_stream()) {
            Sent::Ended
        } else {
            Sent::More
        }
    }

    /// Waiting on the body or the window: unless the receiving side reset
    /// the stream meanwhile, in which case there is nothing more to do.
    /// Either way the task hears of a later reset.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.stream.poll_reset(cx) {
            Poll::Ready(reset) => {
                tracing::debug!(reason = ?reset.ok(), "the receiving side reset the stream");
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

enum Sent {
    /// The body ended, or the stream is gone.
    Ended,
    /// Sent; read on.
    More,
    /// Kept in `pending` until the window opens.
    Waiting,
}

impl<B> Future for Pipe<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(stopped) = this.stopped.as_mut()
            && Pin::new(stopped).poll(cx).is_ready()
        {
            this.stream.send_reset(Reason::CANCEL);
            return Poll::Ready(());
        }
        loop {
            if let Some(data) = this.pending.take() {
                match this.send(data, cx) {
                    Sent::Ended => return Poll::Ready(()),
                    Sent::More => {}
                    Sent::Waiting => return this.wait(cx),
                }
            }
            let frame = match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return this.wait(cx),
                Poll::Ready(frame) => frame,
            };
            match on_frame(frame, &this.body, &mut this.stream, this.broken) {
                Step::Done => return Poll::Ready(()),
                Step::Continue => {}
                Step::Data(data) => this.pending = Some(data),
            }
        }
    }
}
