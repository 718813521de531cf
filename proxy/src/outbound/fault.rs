//! Fault injection, as Istio does it, from the service's `faults` in
//! mesh.toml: delay a share of calls, and abort a share with a status,
//! either before the call reaches the service or (`after_response`) after
//! the service answered, dropping its answer the way a lost response looks.
//! It sits below the retry layer and below the deadline, which still applies
//! to a delay. As in Istio, an abort stands in for the upstream's answer, so it
//! is marked [`Injected`] and the retry layer never retries it; an
//! `after_response` fault is a real failure upstream (the call was handled, the
//! answer lost) and stays retryable like one. The dice are the thread's own
//! RNG: no lock.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::Either;
use http::{Request, Response};
use meshwork_config::Abort;
use tower::{Layer, Service, ServiceExt};

use super::policy::PolicyHandle;
use crate::{body::ProxyBody, grpc::status};

/// Marks an injected abort's response: the answer, never retried.
#[derive(Debug, Clone, Copy)]
pub struct Injected;

#[derive(Clone)]
pub struct FaultLayer {
    policy: PolicyHandle,
}

impl FaultLayer {
    pub fn new(policy: PolicyHandle) -> Self {
        FaultLayer { policy }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Faults<S>;

    fn layer(&self, inner: S) -> Faults<S> {
        Faults {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Faults<S> {
    inner: S,
    policy: PolicyHandle,
}

/// Whether an event of `percent` % chance happens this time.
fn roll(percent: f64) -> bool {
    percent > 0.0 && rand::random::<f64>() * 100.0 < percent
}

type Answer = Result<Response<ProxyBody>, Infallible>;

impl<S, B> Service<Request<B>> for Faults<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    /// The common case (no fault drawn) adds nothing; a drawn fault boxes.
    type Future = Either<S::Future, Pin<Box<dyn Future<Output = Answer> + Send>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let policy = self.policy.load();
        let faults = policy.faults(req.uri().path());
        let mut delay: Option<Duration> = None;
        let mut abort: Option<&Abort> = None;
        for fault in faults.iter() {
            if let Some(d) = &fault.delay
                && delay.is_none()
                && roll(d.percent)
            {
                delay = Some(d.duration);
            }
            if let Some(a) = &fault.abort
                && abort.is_none()
                && roll(a.percent)
            {
                abort = Some(a);
            }
        }
        if delay.is_none() && abort.is_none() {
            return Either::Left(self.inner.call(req));
        }
        let abort = abort.cloned();
        let destination = policy.name.clone();
        let inner = self.inner.clone();
        Either::Right(Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let mut inner = inner;
            let Some(abort) = abort else {
                return inner.ready().await?.call(req).await;
            };
            if abort.after_response {
                // Let the service handle the call, then lose its answer.
                let Ok(rsp) = inner.ready().await?.call(req).await;
                drop(rsp);
                let message = format!(
                    "fault injected: {destination} answered, the answer was dropped ({})",
                    abort.status
                );
                return Ok(status::response_for(abort.status, &message));
            }
            let message = format!("fault injected: call to {destination} aborted ({})", abort.status);
            let mut rsp = status::response_for(abort.status, &message);
            rsp.extensions_mut().insert(Injected);
            Ok(rsp)
        }))
    }
}
