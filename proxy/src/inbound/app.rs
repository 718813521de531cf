//! The last inbound step: forward the call to the app over a pooled,
//! plaintext HTTP/2 connection on loopback.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, Uri, uri::Authority, uri::Scheme};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::connect::HttpConnector,
    rt::{TokioExecutor, TokioTimer},
};
use tower::Service;

use crate::{
    body::ProxyBody,
    forward::{Client, ForwardFuture},
    grpc::{Code, status},
    options::Settings,
};

#[derive(Clone)]
pub struct ToApp {
    client: Client<HttpConnector>,
    authority: Authority,
    upstream: Arc<str>,
}

impl ToApp {
    /// `service` names the app in messages ("echo app (127.0.0.1:7101)").
    pub fn new(service: &str, app: SocketAddr, settings: &Settings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .http2_keep_alive_interval(settings.keepalive_interval)
            .build(connector);
        // A SocketAddr always forms a valid authority; fall back to the
        // loopback name rather than fail if that ever changed.
        let authority = Authority::try_from(app.to_string()).unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        ToApp {
            client,
            authority,
            upstream: format!("{service} app ({app})").into(),
        }
    }
}

impl Service<Request<Incoming>> for ToApp {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = futures::future::Either<ForwardFuture, std::future::Ready<Result<Response<ProxyBody>, Infallible>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The pooled client is always ready; its pool bounds connections.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        match Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(error) => {
                return futures::future::Either::Right(std::future::ready(Ok(status::response(
                    Code::Internal,
                    &format!("cannot forward to {}: {error}", self.upstream),
                ))));
            }
        }
        futures::future::Either::Left(ForwardFuture::new(self.client.request(req), self.upstream.clone()))
    }
}
