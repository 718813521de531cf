//! One HTTP/2 connection per upstream, shared by every call to it as
//! streams: made on first use, made again once it has closed or failed.
//!
//! Written here rather than taken from hyper-util's pooled client: HTTP/2
//! needs no pool of connections, only one, and that client boxed a 3.6 KiB
//! future per call (its pool checkout and connect machinery) and took a
//! lock on every checkout. Here a call clones a ready sender under a
//! short, uncontended lock and sends; only the first call after a close
//! waits for the connect, which all waiting calls share (single flight).

use std::{
    error::Error as StdError,
    sync::{Arc, Mutex, PoisonError},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use http::Uri;
use http_body::Body;
use hyper::{
    client::conn::http2::{Builder, SendRequest},
    rt::{Read, Write},
};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::{Service, ServiceExt};

use crate::options::Settings;

/// Why no connection could be made (TCP, TLS, or the HTTP/2 handshake);
/// shared by every call that waited for the attempt.
#[derive(Debug, Clone)]
pub struct ConnectFailure(pub Arc<dyn StdError + Send + Sync>);

/// A sender on the current connection; `generation` names the connection
/// so a call that saw it fail can retire exactly that one.
pub struct Sender<B> {
    pub send: SendRequest<B>,
    pub generation: u64,
}

// Derived `Clone` would require `B: Clone`; a sender clones without it.
impl<B> Clone for Sender<B> {
    fn clone(&self) -> Self {
        Sender {
            send: self.send.clone(),
            generation: self.generation,
        }
    }
}

type Connecting<B> = Shared<BoxFuture<'static, Result<Sender<B>, ConnectFailure>>>;

enum State<B> {
    Idle,
    Connecting { generation: u64, attempt: Connecting<B> },
    Ready(Sender<B>),
}

/// The connection to one upstream and the means to make it again.
pub struct Connection<C, B> {
    connector: C,
    /// What the connector is asked to connect to (`http://127.0.0.1:7101`).
    target: Uri,
    builder: Builder<TokioExecutor>,
    state: Mutex<(State<B>, u64)>,
}

impl<C, B> Connection<C, B>
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<Box<dyn StdError + Send + Sync>>,
    C::Future: Send,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    pub fn new(connector: C, target: Uri, settings: &Settings) -> Self {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(settings.keepalive_interval)
            .keep_alive_while_idle(true);
        Connection {
            connector,
            target,
            builder,
            state: Mutex::new((State::Idle, 0)),
        }
    }

    /// A sender on an open connection, connecting first if there is none.
    pub async fn sender(&self) -> Result<Sender<B>, ConnectFailure> {
        let (generation, attempt) = {
            let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let (state, last_generation) = &mut *guard;
            match state {
                State::Ready(sender) if !sender.send.is_closed() => return Ok(sender.clone()),
                State::Connecting { generation, attempt } => (*generation, attempt.clone()),
                State::Idle | State::Ready(_) => {
                    *last_generation += 1;
                    let generation = *last_generation;
                    let attempt = self.connect(generation).shared();
                    *state = State::Connecting {
                        generation,
                        attempt: attempt.clone(),
                    };
                    (generation, attempt)
                }
            }
        };
        let outcome = attempt.await;
        // Whichever waiting call gets here first publishes the outcome.
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut guard.0;
        if matches!(state, State::Connecting { generation: g, .. } if *g == generation) {
            *state = match &outcome {
                Ok(sender) => State::Ready(sender.clone()),
                Err(_) => State::Idle,
            };
        }
        outcome
    }

    /// Retires connection `generation` after a call on it failed in a way
    /// that concerns the connection, so the next call makes a new one.
    pub fn retire(&self, generation: u64) {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(&guard.0, State::Ready(sender) if sender.generation == generation) {
            guard.0 = State::Idle;
        }
    }

    fn connect(&self, generation: u64) -> BoxFuture<'static, Result<Sender<B>, ConnectFailure>> {
        let connector = self.connector.clone();
        let target = self.target.clone();
        let builder = self.builder.clone();
        async move {
            let io = connector
                .oneshot(target)
                .await
                .map_err(|error| ConnectFailure(Arc::from(error.into())))?;
            let (send, connection) = builder
                .handshake(io)
                .await
                .map_err(|error| ConnectFailure(Arc::new(error)))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream connection ended");
                }
            });
            Ok(Sender { send, generation })
        }
        .boxed()
    }
}
