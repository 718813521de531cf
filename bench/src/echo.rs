//! The echo app every scenario ends at: `meshwork.echo.v1.EchoService` and
//! `grpc.health.v1` (which `mesh proxy` probes before it is ready) over
//! plaintext HTTP/2 on 127.0.0.1, on its own runtime.

use std::{net::SocketAddr, pin::Pin};

use anyhow::{Context, Result};
use futures::{Stream, StreamExt};
use meshwork_proto::echo::{
    EchoRequest, EchoResponse,
    echo_service_server::{EchoService, EchoServiceServer},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use crate::background::Background;

/// Largest message either way: a 1 MiB payload plus its framing, with room.
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// Streams one connection may carry: more than any step opens, so that the
/// app never caps a proxy's (or the client's) concurrency.
const MAX_STREAMS: u32 = 8192;

pub struct EchoServer {
    pub addr: SocketAddr,
    _runtime: Background,
}

impl EchoServer {
    /// Starts serving on a port the OS picks, with `threads` worker threads.
    pub fn start(threads: usize) -> Result<EchoServer> {
        Self::start_on("127.0.0.1:0".parse()?, threads)
    }

    /// Starts serving on `addr` (the soak's replicas, each on its port, and
    /// again on the same port after a restart). Dropping it closes the
    /// listener and every connection.
    pub fn start_on(addr: SocketAddr, threads: usize) -> Result<EchoServer> {
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("binding the echo server to {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = Background::new("bench-echo", threads)?;
        let handle = runtime.handle().context("echo runtime")?;
        handle.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!("echo server: {error}");
                    return;
                }
            };
            // gRPC is latency-bound: no Nagle on any accepted connection.
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                conn.and_then(|stream| {
                    stream.set_nodelay(true)?;
                    Ok(stream)
                })
            });
            let (_reporter, health) = tonic_health::server::health_reporter();
            let echo = EchoServiceServer::new(Echo)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let served = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(MAX_STREAMS))
                // Configured as our services are: a proxy passes on its
                // callers' cancellations in bursts, and h2's default bound
                // of 20 streams reset before they are taken would close
                // the connection (`--deadline` with tiny deadlines).
                .http2_max_pending_accept_reset_streams(Some(MAX_STREAMS as usize))
                .add_service(health)
                .add_service(echo)
                .serve_with_incoming(incoming)
                .await;
            if let Err(error) = served {
                eprintln!("echo server stopped: {error}");
            }
        });
        Ok(EchoServer {
            addr,
            _runtime: runtime,
        })
    }
}

struct Echo;

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

fn response(req: EchoRequest, index: u32) -> EchoResponse {
    EchoResponse {
        message: req.message,
        index,
        payload: req.payload,
    }
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(response(request.into_inner(), 0)))
    }

    async fn client_stream(&self, request: Request<Streaming<EchoRequest>>) -> Result<Response<EchoResponse>, Status> {
        let mut stream = request.into_inner();
        let mut count = 0u32;
        while stream.message().await?.is_some() {
            count = count.saturating_add(1);
        }
        Ok(Response::new(EchoResponse {
            index: count,
            ..EchoResponse::default()
        }))
    }

    type ServerStreamStream = ResponseStream;

    /// `repeat` responses, each carrying the request's payload.
    async fn server_stream(&self, request: Request<EchoRequest>) -> Result<Response<ResponseStream>, Status> {
        let req = request.into_inner();
        let stream = futures::stream::iter(0..req.repeat).map(move |index| {
            Ok(EchoResponse {
                message: String::new(),
                index,
                payload: req.payload.clone(),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type BidiStreamStream = ResponseStream;

    /// One response per request, for as long as the caller keeps the stream open.
    async fn bidi_stream(&self, request: Request<Streaming<EchoRequest>>) -> Result<Response<ResponseStream>, Status> {
        let mut index = 0;
        let stream = request.into_inner().map(move |req| {
            index += 1;
            req.map(|req| response(req, index - 1))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
