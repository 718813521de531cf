//! Failure accrual: an endpoint that fails `threshold` calls in a row
//! (connection refused or reset, `UNAVAILABLE`, a peer saying its app is
//! down) is ejected: the balancer stops choosing it. After a backoff
//! (1 s doubling to 30 s, jittered) one call probes it; success puts it back,
//! failure ejects it again for longer.
//!
//! One `AccrualLayer` wraps each endpoint's client; its state is shared with
//! the balancer, which asks it whether the endpoint may be chosen. All
//! atomics: the state is read on every call by every connection.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use meshwork_telemetry::grpc_status::GRPC_STATUS;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::backoff;
use crate::{body::ProxyBody, forward::NOT_PROCESSED};

/// Consecutive failures that eject an endpoint.
pub const DEFAULT_THRESHOLD: u32 = 5;
const PROBE_BASE: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(30);

/// Response extension on a failed attempt: which endpoint failed, so that
/// the retry can go elsewhere. Only failures carry it (no allocation on
/// the happy path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedBy(pub SocketAddr);

/// Whether a response counts as the endpoint failing: `UNAVAILABLE` in its
/// headers (our own answer for a broken connection, or the peer's), or the
/// peer's marker that its app is unreachable.
pub fn is_failure<B>(rsp: &Response<B>) -> bool {
    let headers = rsp.headers();
    headers.contains_key(NOT_PROCESSED) || headers.get(GRPC_STATUS).is_some_and(|s| s.as_bytes() == b"14")
}

#[derive(Debug)]
pub struct AccrualState {
    endpoint: SocketAddr,
    destination: Arc<str>,
    threshold: u32,
    epoch: Instant,
    consecutive: AtomicU32,
    /// 0 while in service; else when (ms since `epoch`, plus one) the next
    /// probe may go.
    ejected_until: AtomicU64,
    /// Ejections (and failed probes) since the endpoint last succeeded,
    /// which sets the backoff.
    strikes: AtomicU32,
    ejections: Counter,
    /// Told of every failure, when discovery wants to know (a DNS name is
    /// asked again at once: the endpoint may have left).
    failures: Option<Arc<tokio::sync::Notify>>,
}

impl AccrualState {
    pub fn new(destination: Arc<str>, endpoint: SocketAddr, threshold: u32, ejections: Counter) -> Self {
        AccrualState {
            endpoint,
            destination,
            threshold: threshold.max(1),
            epoch: Instant::now(),
            consecutive: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            strikes: AtomicU32::new(0),
            ejections,
            failures: None,
        }
    }

    /// Notifies `failures` of every failed call.
    pub fn signal_failures_to(mut self, failures: Arc<tokio::sync::Notify>) -> Self {
        self.failures = Some(failures);
        self
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// In service (not ejected).
    pub fn available(&self) -> bool {
        self.ejected_until.load(Relaxed) == 0
    }

    /// For an ejected endpoint whose probe is due: claims the probe (one
    /// caller wins) and sets the time of the next one in case it fails.
    pub fn claim_probe(&self) -> bool {
        let until = self.ejected_until.load(Relaxed);
        let now = self.now_ms();
        if until == 0 || now < until {
            return false;
        }
        let strikes = self.strikes.fetch_add(1, Relaxed) + 1;
        let next = now + backoff::equal_jitter(strikes, PROBE_BASE, PROBE_MAX).as_millis() as u64;
        self.ejected_until
            .compare_exchange(until, next, Relaxed, Relaxed)
            .is_ok()
    }

    pub fn record(&self, failed: bool) {
        if !failed {
            // Read before writing: on the usual success nothing changes, and
            // a write would bounce the cache line between every core calling
            // this endpoint.
            if self.consecutive.load(Relaxed) != 0 {
                self.consecutive.store(0, Relaxed);
            }
            if self.ejected_until.load(Relaxed) != 0 && self.ejected_until.swap(0, Relaxed) != 0 {
                self.strikes.store(0, Relaxed);
                tracing::info!(destination = %self.destination, endpoint = %self.endpoint, "endpoint back in service");
            }
            return;
        }
        if let Some(signal) = &self.failures {
            signal.notify_one();
        }
        let failures = self.consecutive.fetch_add(1, Relaxed) + 1;
        if failures < self.threshold || !self.available() {
            return;
        }
        let strikes = self.strikes.fetch_add(1, Relaxed) + 1;
        let out = backoff::equal_jitter(strikes, PROBE_BASE, PROBE_MAX);
        let until = self.now_ms() + out.as_millis() as u64;
        if self.ejected_until.compare_exchange(0, until, Relaxed, Relaxed).is_ok() {
            self.ejections.inc();
            tracing::warn!(
                destination = %self.destination,
                endpoint = %self.endpoint,
                failures,
                probe_in = ?out,
                "endpoint ejected after consecutive failures"
            );
        }
    }
}

#[derive(Clone)]
pub struct AccrualLayer {
    state: Arc<AccrualState>,
}

impl AccrualLayer {
    pub fn new(state: Arc<AccrualState>) -> Self {
        AccrualLayer { state }
    }
}

impl<S> Layer<S> for AccrualLayer {
    type Service = Accrual<S>;

    fn layer(&self, inner: S) -> Accrual<S> {
        Accrual {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Accrual<S> {
    inner: S,
    state: Arc<AccrualState>,
}

impl<S, B> Service<Request<B>> for Accrual<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = Infallible>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = AccrualFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        AccrualFuture {
            inner: self.inner.call(req),
            state: self.state.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct AccrualFuture<F> {
        #[pin]
        inner: F,
        state: Arc<AccrualState>,
    }
}

impl<F> Future for AccrualFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut rsp) = futures::ready!(this.inner.poll(cx));
        let failed = is_failure(&rsp);
        this.state.record(failed);
        if failed {
            rsp.extensions_mut().insert(ServedBy(this.state.endpoint));
        }
        Poll::Ready(Ok(rsp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AccrualState {
        AccrualState::new(
            "catalog".into(),
            "127.0.0.1:1".parse().expect("addr"),
            3,
            Counter::default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures_and_probes_back() {
        let s = state();
        s.record(true);
        s.record(true);
        s.record(false);
        s.record(true);
        s.record(true);
        assert!(s.available(), "a success in between resets the count");
        s.record(true);
        assert!(!s.available());
        assert_eq!(s.ejections.get(), 1);
        assert!(!s.claim_probe(), "no probe before the backoff");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(s.claim_probe(), "probe due after at most 1 s");
        assert!(!s.claim_probe(), "one probe at a time");
        // The probe fails: out again, for longer (2 s ceiling, at least 1 s).
        s.record(true);
        assert!(!s.available());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!s.claim_probe());
        tokio::time::advance(Duration::from_millis(1002)).await;
        assert!(s.claim_probe());
        s.record(false);
        assert!(s.available(), "a successful probe puts it back");
        assert_eq!(s.ejections.get(), 1);
    }

    #[tokio::test]
    async fn every_failure_is_signalled_to_discovery() {
        let signal = Arc::new(tokio::sync::Notify::new());
        let s = state().signal_failures_to(signal.clone());
        s.record(false);
        let quiet = tokio::time::timeout(Duration::from_millis(50), signal.notified()).await;
        assert!(quiet.is_err(), "a success was signalled");
        s.record(true);
        tokio::time::timeout(Duration::from_secs(1), signal.notified())
            .await
            .expect("the failure was signalled");
    }

    #[test]
    fn failures_are_unavailable_or_unprocessed() {
        let with = |name: &str, value: &str| {
            let mut rsp = Response::new(());
            rsp.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
            rsp
        };
        assert!(is_failure(&with("grpc-status", "14")));
        assert!(is_failure(&with("meshwork-not-processed", "1")));
        assert!(!is_failure(&with("grpc-status", "5")));
        assert!(!is_failure(&Response::new(())));
    }
}
