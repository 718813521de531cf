//! Connecting to a scenario's entry point and making one call of each kind.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use meshwork_proto::echo::{EchoRequest, echo_service_client::EchoServiceClient};
use tonic::{Status, transport::Channel};

use super::{Caller, Failure};
use crate::{echo::MAX_MESSAGE, plan::CallKind};

/// A gRPC client on one HTTP/2 connection; clones share the connection and
/// multiplex their calls on it as streams, as real gRPC clients do.
pub type Client = EchoServiceClient<Channel>;

/// A call that takes longer than this is counted as DEADLINE_EXCEEDED.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP/2 connection (h2c, prior knowledge) to `addr`, for any gRPC client.
pub async fn channel(addr: SocketAddr) -> Result<Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// An echo client on one connection to `addr`.
pub async fn connect(addr: SocketAddr) -> Result<Client> {
    Ok(EchoServiceClient::new(channel(addr).await?)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// `n` separate connections to `addr`.
pub async fn connect_many(addr: SocketAddr, n: usize) -> Result<Vec<Client>> {
    futures::future::try_join_all((0..n).map(|_| connect(addr))).await
}

/// The request a step sends: `payload` bytes (and, for server streaming,
/// how many responses to send back).
pub fn request(kind: CallKind, payload: usize) -> EchoRequest {
    EchoRequest {
        message: String::new(),
        repeat: match kind {
            CallKind::Unary => 0,
            CallKind::ServerStream { messages } => messages,
        },
        payload: vec![0x5a; payload],
    }
}

/// Makes one call and reads the whole answer; the error is the call's gRPC
/// status (a proxy's HTTP error arrives as the status tonic maps it to).
/// With a `deadline`, the call carries it as `grpc-timeout`.
pub async fn call(
    client: &mut Client,
    kind: CallKind,
    request: EchoRequest,
    deadline: Option<Duration>,
) -> Result<(), Status> {
    let mut request = tonic::Request::new(request);
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    let answer = tokio::time::timeout(CALL_TIMEOUT, async {
        match kind {
            CallKind::Unary => client.unary(request).await.map(drop),
            CallKind::ServerStream { messages } => {
                let mut stream = client.server_stream(request).await?.into_inner();
                let mut received = 0u32;
                while stream.message().await?.is_some() {
                    received += 1;
                }
                if received == messages {
                    Ok(())
                } else {
                    Err(Status::data_loss(format!("{received} of {messages} responses")))
                }
            }
        }
    })
    .await;
    match answer {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => Err(status),
        Err(_elapsed) => Err(Status::deadline_exceeded(format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}

/// An echo call of one kind, repeated by the load loops.
#[derive(Clone)]
pub struct EchoCall {
    client: Client,
    kind: CallKind,
    request: EchoRequest,
    deadline: Option<Duration>,
}

/// One [`EchoCall`] per connection in `clients`: `kind` calls of `payload`
/// bytes, each with `deadline` when given.
pub fn echo_calls(clients: &[Client], kind: CallKind, payload: usize, deadline: Option<Duration>) -> Vec<EchoCall> {
    clients
        .iter()
        .map(|client| EchoCall {
            client: client.clone(),
            kind,
            request: request(kind, payload),
            deadline,
        })
        .collect()
}

impl Caller for EchoCall {
    async fn call(&mut self) -> Result<(), Failure> {
        call(&mut self.client, self.kind, self.request.clone(), self.deadline)
            .await
            .map_err(Failure::from)
    }
}

/// One unary call on a fresh connection: the scenario's whole path works.
pub async fn probe(addr: SocketAddr) -> Result<()> {
    let attempt = async {
        let mut client = connect(addr).await?;
        client
            .unary(request(CallKind::Unary, 16))
            .await
            .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 2 s")))
}
