//! Idle connections and idle open streams, held open so the proxies' memory
//! per connection and per stream can be read while they exist.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use meshwork_proto::echo::{EchoRequest, EchoResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::{
    Client,
    client::{connect, request},
};
use crate::plan::CallKind;

/// `n` connections to `addr`, each having made one call (so every proxy on
/// the path has set up whatever a connection costs it), then left idle.
pub async fn hold_connections(addr: SocketAddr, n: usize) -> Result<Vec<Client>> {
    futures::future::try_join_all((0..n).map(|_| async move {
        let mut client = connect(addr).await?;
        client
            .unary(request(CallKind::Unary, 16))
            .await
            .context("first call on an idle connection")?;
        anyhow::Ok(client)
    }))
    .await
}

/// Open bidirectional streams, each having echoed one message, kept open
/// until dropped (dropping the senders ends them).
pub struct HeldStreams {
    senders: Vec<mpsc::Sender<EchoRequest>>,
    _responses: Vec<Streaming<EchoResponse>>,
}

impl HeldStreams {
    /// How many streams are open.
    pub fn count(&self) -> usize {
        self.senders.len()
    }
}

/// Opens `n` streams spread over `clients`.
pub async fn hold_streams(clients: &[Client], n: usize) -> Result<HeldStreams> {
    let opened = futures::future::try_join_all(clients.iter().cycle().take(n).cloned().map(|mut client| async move {
        let (tx, rx) = mpsc::channel(1);
        tx.send(request(CallKind::Unary, 16)).await?;
        let mut responses = client
            .bidi_stream(ReceiverStream::new(rx))
            .await
            .context("opening a stream")?
            .into_inner();
        if responses
            .message()
            .await
            .context("first message on a stream")?
            .is_none()
        {
            bail!("the stream ended before its first answer");
        }
        anyhow::Ok((tx, responses))
    }))
    .await?;
    let (senders, responses) = opened.into_iter().unzip();
    Ok(HeldStreams {
        senders,
        _responses: responses,
    })
}
