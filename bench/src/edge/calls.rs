//! The calls the edge benchmark repeats: REST over HTTP/1.1 keep-alive
//! connections (what browsers and scripts send to all three edges; neither
//! nginx's JSON proxy nor grpc-gateway's `net/http` server is given h2c), and
//! native gRPC over one HTTP/2 connection.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use meshwork_proto::shop::catalog::v1::{GetProductRequest, catalog_service_client::CatalogServiceClient};
use tonic::transport::Channel;

use super::backend::PRODUCT_ID;
use crate::load::{self, Caller, Failure};

/// A call that takes longer than this counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a REST call sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// `GET /v1/products/book-ddia`.
    GetProduct,
    /// The same with `Cache-Control: no-cache`: a cache's miss on purpose.
    GetProductNoCache,
    /// `POST /v1/users` with a JSON body (a registration).
    Register,
}

/// One REST call, on a pool of HTTP/1.1 keep-alive connections that grows
/// to as many connections as calls in flight (shared by clones).
#[derive(Clone)]
pub struct RestCall {
    client: Client<HttpConnector, Full<Bytes>>,
    method: Method,
    uri: Uri,
    headers: Arc<HeaderMap>,
    body: Bytes,
}

impl RestCall {
    pub fn new(edge: SocketAddr, rest: Rest) -> Result<RestCall> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(300))
            .pool_max_idle_per_host(4096)
            .build(connector);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
        let (method, path, body) = match rest {
            Rest::GetProduct => (Method::GET, format!("/v1/products/{PRODUCT_ID}"), Bytes::new()),
            Rest::GetProductNoCache => {
                headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                (Method::GET, format!("/v1/products/{PRODUCT_ID}"), Bytes::new())
            }
            Rest::Register => {
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                let body = r#"{"email":"ada@example.com","password":"correct horse battery","displayName":"Ada"}"#;
                (Method::POST, "/v1/users".into(), Bytes::from_static(body.as_bytes()))
            }
        };
        let uri = format!("http://{edge}{path}").parse().context("the REST call's URI")?;
        Ok(RestCall {
            client,
            method,
            uri,
            headers: Arc::new(headers),
            body,
        })
    }
}

impl Caller for RestCall {
    async fn call(&mut self) -> Result<(), Failure> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = (*self.headers).clone();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::new("HTTP error", format!("{e:?}")))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure::new("HTTP error", e.to_string()))?
                .to_bytes();
            if status.is_success() {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                Err(Failure::new(format!("HTTP {}", status.as_u16()), text))
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(Failure::new("timeout", format!("no answer within {CALL_TIMEOUT:?}"))))
    }
}

/// `CatalogService/GetProduct` as native gRPC, on one HTTP/2 connection.
#[derive(Clone)]
pub struct GrpcGetProduct {
    client: CatalogServiceClient<Channel>,
}

impl GrpcGetProduct {
    pub async fn connect(addr: SocketAddr) -> Result<GrpcGetProduct> {
        Ok(GrpcGetProduct {
            client: CatalogServiceClient::new(load::channel(addr).await?),
        })
    }
}

impl Caller for GrpcGetProduct {
    async fn call(&mut self) -> Result<(), Failure> {
        let mut request = tonic::Request::new(GetProductRequest {
            product_id: PRODUCT_ID.into(),
        });
        request.set_timeout(CALL_TIMEOUT);
        self.client.get_product(request).await.map(drop).map_err(Failure::from)
    }
}
