//! An in-process echo app serving meshwork.echo.v1.EchoService (all four
//! RPC kinds) and grpc.health.v1 over plaintext HTTP/2. Every response
//! carries the request's `x-*` headers back as response headers (and the
//! `traceparent` it received as `x-echo-traceparent`) and, when
//! the call succeeds, the custom trailer `x-echo-trailer: done`, so tests can
//! see metadata and trailers cross the proxies intact.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http::{HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use meshwork_proto::echo::{
    EchoRequest, EchoResponse,
    echo_service_server::{EchoService, EchoServiceServer},
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};
use tower::ServiceExt;

/// A `message` that makes Unary fail with this status.
pub const FAIL: &str = "please fail";
pub const FAIL_CODE: Code = Code::FailedPrecondition;
/// Non-ASCII on purpose: grpc-message is percent-encoded on the wire.
pub const FAIL_MESSAGE: &str = "échec: the echo app refused (100% on purpose)";
/// A ServerStream `message` that sends each response after the first only
/// when the test adds a permit to [`EchoApp::gate`].
pub const GATED: &str = "gated";

pub struct EchoApp {
    pub addr: SocketAddr,
    pub gate: Arc<Semaphore>,
}

impl EchoApp {
    /// Serves on `listener` for as long as the test's runtime lives.
    pub fn start(listener: TcpListener) -> EchoApp {
        let addr = listener.local_addr().expect("addr");
        let gate = Arc::new(Semaphore::new(0));
        let echo = EchoServiceServer::new(Echo { gate: gate.clone() });
        let (_reporter, health) = tonic_health::server::health_reporter();
        let routes = tonic::service::Routes::new(echo).add_service(health).prepare();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                // As tonic's own server does (Nagle would hold small responses).
                let _ = stream.set_nodelay(true);
                let routes = routes.clone();
                let service = tower::service_fn(move |req: Request<Incoming>| {
                    let routes = routes.clone();
                    async move { Ok::<_, Infallible>(with_echoed_metadata(routes, req).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                        .await;
                });
            }
        });
        EchoApp { addr, gate }
    }
}

type EchoBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, Status>;

/// Runs the gRPC routes, copying `x-*` request headers onto the response and
/// adding `x-echo-trailer` to the response's trailers.
async fn with_echoed_metadata(routes: tonic::service::Routes, req: Request<Incoming>) -> Response<EchoBody> {
    let echoed: Vec<_> = req
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .chain(
            req.headers()
                .get("traceparent")
                .map(|value| (http::HeaderName::from_static("x-echo-traceparent"), value.clone())),
        )
        .collect();
    let rsp = match routes.oneshot(req).await {
        Ok(rsp) => rsp,
        Err(never) => match never {},
    };
    let (mut parts, body) = rsp.into_parts();
    parts.headers.extend(echoed);
    let body = body
        .map_frame(|frame| match frame.into_trailers() {
            Ok(mut trailers) => {
                trailers.insert("x-echo-trailer", HeaderValue::from_static("done"));
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        })
        .boxed_unsync();
    Response::from_parts(parts, body)
}

struct Echo {
    gate: Arc<Semaphore>,
}

fn response(message: String, index: u32, payload: Vec<u8>) -> EchoResponse {
    EchoResponse {
        message,
        index,
        payload,
    }
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn unary(&self, request: tonic::Request<EchoRequest>) -> Result<tonic::Response<EchoResponse>, Status> {
        let req = request.into_inner();
        if req.message == FAIL {
            return Err(Status::new(FAIL_CODE, FAIL_MESSAGE));
        }
        Ok(tonic::Response::new(response(req.message, 0, req.payload)))
    }

    async fn client_stream(
        &self,
        request: tonic::Request<Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<EchoResponse>, Status> {
        let mut stream = request.into_inner();
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        while let Some(req) = stream.message().await? {
            messages.push(req.message);
            bytes += req.payload.len();
        }
        let count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        Ok(tonic::Response::new(response(
            format!("{} ({bytes} bytes)", messages.join(",")),
            count,
            Vec::new(),
        )))
    }

    type ServerStreamStream = ReceiverStream<Result<EchoResponse, Status>>;

    async fn server_stream(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<Self::ServerStreamStream>, Status> {
        let req = request.into_inner();
        let gated = req.message == GATED;
        let gate = self.gate.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for index in 0..req.repeat {
                if gated && index > 0 {
                    match gate.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => return,
                    }
                }
                let item = response(format!("{}#{index}", req.message), index, req.payload.clone());
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }

    type BidiStreamStream = ReceiverStream<Result<EchoResponse, Status>>;

    async fn bidi_stream(
        &self,
        request: tonic::Request<Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<Self::BidiStreamStream>, Status> {
        let mut stream = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut index = 0;
            while let Ok(Some(req)) = stream.message().await {
                if tx.send(Ok(response(req.message, index, req.payload))).await.is_err() {
                    return;
                }
                index += 1;
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}
