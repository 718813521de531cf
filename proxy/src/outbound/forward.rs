//! The last outbound step: send the call to one endpoint (a replica's
//! sidecar) over its pooled mTLS HTTP/2 connection. Each endpoint has its
//! own client, so its pool holds connections to that replica only.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, Uri, uri::Authority, uri::Scheme};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;

use super::{
    connect::MtlsConnector,
    destination::{Destination, ServiceName},
    replay::ReplayBody,
};
use crate::{
    body::ProxyBody,
    forward::ForwardFuture,
    grpc::{Code, status},
    options::Settings,
    param::Param,
};

#[derive(Clone)]
pub struct Forward {
    /// Cheap to clone (its parts are shared): the balancer clones it per call.
    client: hyper_util::client::legacy::Client<MtlsConnector, ReplayBody>,
    /// `:authority` of forwarded calls: the destination's name, which is
    /// also the pool key.
    authority: Authority,
    upstream: Arc<str>,
}

impl Forward {
    pub fn new(destination: &Destination, connector: MtlsConnector, settings: &Settings) -> Self {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .http2_keep_alive_interval(settings.keepalive_interval)
            .build(connector);
        let ServiceName(name) = destination.param();
        let authority = Authority::try_from(name.as_ref()).unwrap_or_else(|_| Authority::from_static("mesh"));
        Forward {
            client,
            authority,
            upstream: destination.label().into(),
        }
    }
}

impl Service<Request<ReplayBody>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = futures::future::Either<ForwardFuture, std::future::Ready<Result<Response<ProxyBody>, Infallible>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReplayBody>) -> Self::Future {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTPS);
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
        futures::future::Either::Left(ForwardFuture::to_sidecar(
            self.client.request(req),
            self.upstream.clone(),
        ))
    }
}
