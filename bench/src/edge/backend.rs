//! The shop the edges stand in front of, answering in constant time so the
//! table shows what each edge costs, not a database: one product and one
//! registration, canned, over gRPC (h2c, for the Meshwork gateway and
//! grpc-gateway) and as JSON over HTTP/1.1 (for nginx, which does not
//! transcode). Written on hyper directly rather than as tonic services: the
//! shop's contracts have eighteen methods and the benchmark calls two.

use std::{convert::Infallible, net::SocketAddr};

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_proto::shop::{
    catalog::v1::Product,
    common::v1::Money,
    users::v1::{RegisterResponse, User},
};
use prost::Message;
use tokio::net::TcpListener;
use tonic_health::pb::{HealthCheckResponse, health_check_response::ServingStatus};

use crate::background::Background;

/// The product every `GetProduct` answers with.
pub const PRODUCT_ID: &str = "book-ddia";
pub const GET_PRODUCT: &str = "/shop.catalog.v1.CatalogService/GetProduct";
pub const REGISTER: &str = "/shop.users.v1.UserService/Register";
/// The sidecar is ready only while its app answers SERVING here.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// The running backend; dropping it stops its runtime and its listeners.
pub struct Backend {
    /// gRPC, HTTP/2 with prior knowledge.
    pub grpc: SocketAddr,
    /// JSON over HTTP/1.1: `GET /v1/products/{id}`, `POST /v1/users`.
    pub json: SocketAddr,
    _runtime: Background,
}

/// The two answers, encoded once: gRPC frames and their JSON forms.
#[derive(Clone)]
struct Canned {
    product_frame: Bytes,
    register_frame: Bytes,
    serving_frame: Bytes,
    product_json: Bytes,
    register_json: Bytes,
}

impl Backend {
    /// Starts both servers on a runtime of their own (`threads` threads), so
    /// the load generator's runtime does not serve them.
    pub fn start(threads: usize) -> Result<Backend> {
        let runtime = Background::new("bench-shop", threads)?;
        let handle = runtime.handle().context("the backend's runtime")?;
        let bind = || -> Result<std::net::TcpListener> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the backend")?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        };
        let (grpc, json) = (bind()?, bind()?);
        let (grpc_addr, json_addr) = (grpc.local_addr()?, json.local_addr()?);
        let canned = Canned::new();
        let grpc_canned = canned.clone();
        handle.spawn(async move {
            if let Ok(listener) = TcpListener::from_std(grpc) {
                serve(listener, true, grpc_canned).await;
            }
        });
        handle.spawn(async move {
            if let Ok(listener) = TcpListener::from_std(json) {
                serve(listener, false, canned).await;
            }
        });
        Ok(Backend {
            grpc: grpc_addr,
            json: json_addr,
            _runtime: runtime,
        })
    }
}

impl Canned {
    fn new() -> Canned {
        let product = Product {
            id: PRODUCT_ID.into(),
            name: "Designing Data-Intensive Applications".into(),
            description: "The big ideas behind reliable, scalable and maintainable systems.".into(),
            category: "books".into(),
            price: Some(Money {
                amount_minor: 4500,
                currency_code: "USD".into(),
            }),
            stock: 12,
            updated_at: Some(prost_types::Timestamp {
                seconds: 1_764_633_600,
                nanos: 0,
            }),
        };
        let user = User {
            id: "u-0000000000000001".into(),
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            preferences: None,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_764_633_600,
                nanos: 0,
            }),
            roles: Vec::new(),
        };
        // The JSON the transcoders make of the same messages (proto3 JSON).
        let product_json = format!(
            r#"{{"id":"{}","name":"{}","description":"{}","category":"{}","price":{{"amountMinor":"4500","currencyCode":"USD"}},"stock":12,"updatedAt":"2025-12-02T00:00:00Z"}}"#,
            product.id, product.name, product.description, product.category
        );
        let register_json = r#"{"user":{"id":"u-0000000000000001","email":"ada@example.com","displayName":"Ada","createdAt":"2025-12-02T00:00:00Z"}}"#;
        Canned {
            product_frame: grpc_frame(&product),
            register_frame: grpc_frame(&RegisterResponse { user: Some(user) }),
            serving_frame: grpc_frame(&HealthCheckResponse {
                status: ServingStatus::Serving.into(),
            }),
            product_json: Bytes::from(product_json),
            register_json: Bytes::from_static(register_json.as_bytes()),
        }
    }
}

/// A message as one uncompressed gRPC length-prefixed frame.
fn grpc_frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    frame.put_slice(&body);
    frame.freeze()
}

type Body = BoxBody<Bytes, Infallible>;

async fn serve(listener: TcpListener, grpc: bool, canned: Canned) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let canned = canned.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let canned = canned.clone();
                async move {
                    Ok::<_, Infallible>(match grpc {
                        true => answer_grpc(request, &canned).await,
                        false => answer_json(request, &canned).await,
                    })
                }
            });
            let io = TokioIo::new(stream);
            if grpc {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(4096)
                    .serve_connection(io, service)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
    }
}

async fn answer_grpc(request: Request<Incoming>, canned: &Canned) -> Response<Body> {
    let frame = match request.uri().path() {
        GET_PRODUCT => Some(canned.product_frame.clone()),
        REGISTER => Some(canned.register_frame.clone()),
        HEALTH_CHECK => Some(canned.serving_frame.clone()),
        _ => None,
    };
    // The whole request is read, as a real server would.
    let _ = request.into_body().collect().await;
    let known = frame.is_some();
    let mut response = Response::new(match frame {
        Some(frame) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let frames = [Ok(Frame::data(frame)), Ok(Frame::trailers(trailers))];
            BodyExt::boxed(StreamBody::new(futures::stream::iter(frames)))
        }
        None => BodyExt::boxed(Full::new(Bytes::new())),
    });
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    if !known {
        // Trailers-only: UNIMPLEMENTED for every other method.
        headers.insert("grpc-status", HeaderValue::from_static("12"));
    }
    response
}

async fn answer_json(request: Request<Incoming>, canned: &Canned) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let _ = body.collect().await;
    let path = parts.uri.path();
    let json = match (parts.method.as_str(), path) {
        ("GET", p) if p.strip_prefix("/v1/products/") == Some(PRODUCT_ID) => Some(canned.product_json.clone()),
        ("POST", "/v1/users") => Some(canned.register_json.clone()),
        _ => None,
    };
    let (status, body) = match json {
        Some(json) => (StatusCode::OK, json),
        None => (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"{\"code\":5,\"message\":\"no such route\"}"),
        ),
    };
    let mut response = Response::new(BodyExt::boxed(Full::new(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}
