//! Load balancing per call: power of two choices over each endpoint's
//! peak-EWMA load, among the endpoints failure accrual has not ejected.
//!
//! Our own rather than tower's `p2c::Balance` + `PeakEwmaDiscover`, because:
//! - tower's balancer chooses the endpoint in `poll_ready`, before it sees
//!   the request, so a retry cannot ask for "anyone but the endpoint that
//!   just failed" ([`Exclude`]);
//! - it needs `&mut self`, so sharing one balancer across connections takes
//!   a `Buffer`: a channel hop and a worker task on every call. Here the
//!   endpoint set is an immutable snapshot behind an `ArcSwap`, so every
//!   connection picks from it directly, without a lock or a queue;
//! - ejection and probing come from failure accrual, not from `poll_ready`.
//!
//! Backpressure: none is added here, on purpose. Each endpoint's client is
//! always ready; the bound on work is the outbound listener's connection
//! and stream limits, and the peer's HTTP/2 `MAX_CONCURRENT_STREAMS`.
//! The set changes through `tower::discover::Change`s from discovery.
//!
//! A set that discovery has not answered for yet (a DNS name is asked in
//! the background when the sidecar starts) holds its calls until the first
//! answer, up to [`FIRST_ANSWER_WAIT`]: an app that calls out the moment
//! its sidecar is up should not be told the service has no replicas.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, Either};
use http::{HeaderValue, Request, Response};
use tokio::{sync::watch, time::Instant};
use tower::{Service, discover::Change};

use super::{
    accrual::{AccrualState, ServedBy},
    ewma::{InFlight, PeakEwma},
};
use crate::{
    body::ProxyBody,
    forward::{NOT_PROCESSED, WaitedForConnect},
    grpc::{Code, status},
};

/// Request extension on a retry: the endpoints that already failed this
/// call; not chosen again while another is available. Inline, no heap:
/// a call makes few attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exclude {
    addrs: [Option<SocketAddr>; 4],
}

impl Exclude {
    pub fn add(&mut self, addr: SocketAddr) {
        if self.contains(addr) {
            return;
        }
        if let Some(slot) = self.addrs.iter_mut().find(|a| a.is_none()) {
            *slot = Some(addr);
        } else {
            // Full: forget the oldest.
            self.addrs.rotate_left(1);
            self.addrs[3] = Some(addr);
        }
    }

    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.addrs.contains(&Some(addr))
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.iter().all(Option::is_none)
    }
}

/// One endpoint (a replica's inbound sidecar) and what the balancer knows of it.
pub struct Endpoint<S> {
    pub addr: SocketAddr,
    service: S,
    load: Arc<PeakEwma>,
    accrual: Arc<AccrualState>,
}

impl<S> Endpoint<S> {
    pub fn new(addr: SocketAddr, service: S, accrual: Arc<AccrualState>) -> Self {
        Endpoint {
            addr,
            service,
            load: Arc::default(),
            accrual,
        }
    }
}

/// How long a call waits for discovery's first answer.
pub const FIRST_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The endpoints of one destination, replaced whole on every change.
pub struct EndpointSet<S> {
    /// The destination's name, for messages.
    destination: Arc<str>,
    endpoints: ArcSwap<Vec<Arc<Endpoint<S>>>>,
    /// False until discovery has answered once (or given up trying).
    answered: watch::Sender<bool>,
}

impl<S> EndpointSet<S> {
    /// An empty set, until discovery fills it.
    pub fn new(destination: Arc<str>) -> Self {
        EndpointSet {
            destination,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            answered: watch::Sender::new(false),
        }
    }

    /// Discovery has answered (or failed): calls no longer wait for it.
    pub fn mark_answered(&self) {
        self.answered
            .send_if_modified(|answered| !std::mem::replace(answered, true));
    }

    /// Applies discovery's changes. Removed endpoints finish their calls in
    /// flight; their connections close when the last one ends.
    pub fn apply(&self, changes: Vec<Change<SocketAddr, Endpoint<S>>>) {
        self.mark_answered();
        if changes.is_empty() {
            return;
        }
        let mut next: Vec<Arc<Endpoint<S>>> = self.endpoints.load().iter().cloned().collect();
        for change in changes {
            match change {
                Change::Insert(addr, endpoint) => {
                    next.retain(|e| e.addr != addr);
                    next.push(Arc::new(endpoint));
                }
                Change::Remove(addr) => next.retain(|e| e.addr != addr),
            }
        }
        next.sort_by_key(|e| e.addr);
        self.endpoints.store(Arc::new(next));
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.endpoints.load().iter().map(|e| e.addr).collect()
    }
}

/// Chooses for one call: first an ejected endpoint whose probe is due
/// (so that a recovered endpoint comes back), else the cheaper of two
/// random available endpoints, avoiding `exclude` when there is a choice.
/// A scan of the set's atomics: sets are small (a service's replicas).
fn pick<'a, S>(endpoints: &'a [Arc<Endpoint<S>>], exclude: Option<&Exclude>) -> Option<&'a Arc<Endpoint<S>>> {
    let excluded = |addr: SocketAddr| exclude.is_some_and(|e| e.contains(addr));
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    if let Some(probe) = endpoints
        .iter()
        .find(|e| !excluded(e.addr) && !e.accrual.available() && e.accrual.claim_probe())
    {
        return Some(probe);
    }
    let usable = |e: &Arc<Endpoint<S>>| e.accrual.available() && !excluded(e.addr);
    let start = rand::random_range(0..n);
    let Some(first) = (0..n).map(|k| (start + k) % n).find(|&i| usable(&endpoints[i])) else {
        // Nothing else is available: an excluded endpoint is still better
        // than no answer.
        return endpoints.iter().find(|e| e.accrual.available());
    };
    let second = if n > 1 {
        let offset = rand::random_range(1..n);
        (0..n - 1)
            .map(|k| (first + offset + k) % n)
            .find(|&i| i != first && usable(&endpoints[i]))
    } else {
        None
    };
    let first = &endpoints[first];
    let Some(second) = second.map(|i| &endpoints[i]) else {
        return Some(first);
    };
    let now = Instant::now();
    Some(if second.load.cost(now) < first.load.cost(now) {
        second
    } else {
        first
    })
}

/// Cloned for every call (by the route and the retry layer above): one
/// reference count.
#[derive(Clone)]
pub struct Balance<S> {
    set: Arc<EndpointSet<S>>,
}

impl<S> Balance<S> {
    pub fn new(set: Arc<EndpointSet<S>>) -> Self {
        Balance { set }
    }
}

type Answer = Ready<Result<Response<ProxyBody>, Infallible>>;

/// A call held until discovery's first answer (rare: only at start).
type Held = BoxFuture<'static, Result<Response<ProxyBody>, Infallible>>;

/// What a call to [`Balance`] returns.
pub type BalanceCall<F> = Either<BalanceFuture<F>, Either<Answer, Held>>;

impl<S, B> Service<Request<B>> for Balance<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future =
        Either<BalanceFuture<S::Future>, Either<Answer, BoxFuture<'static, Result<Response<ProxyBody>, Infallible>>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let endpoints = self.set.endpoints.load();
        // Emptiness first: the watch's lock is taken only on an empty set.
        if endpoints.is_empty() && !*self.set.answered.borrow() {
            let (mut this, mut answered) = (self.clone(), self.set.answered.subscribe());
            return Either::Right(Either::Right(Box::pin(async move {
                let _ = tokio::time::timeout(FIRST_ANSWER_WAIT, answered.wait_for(|a| *a)).await;
                let endpoints = this.set.endpoints.load();
                this.pick_and_call(&endpoints, req).await
            })));
        }
        self.pick_and_call(&endpoints, req)
    }
}

impl<S> Balance<S> {
    fn pick_and_call<B>(&mut self, endpoints: &[Arc<Endpoint<S>>], req: Request<B>) -> BalanceCall<S::Future>
    where
        S: Service<Request<B>, Response = Response<ProxyBody>, Error = Infallible> + Clone,
    {
        let Some(endpoint) = pick(endpoints, req.extensions().get::<Exclude>()).cloned() else {
            let message = if endpoints.is_empty() {
                format!("{} has no replicas", self.set.destination)
            } else {
                format!(
                    "every replica of {} is failing ({} ejected)",
                    self.set.destination,
                    endpoints.len()
                )
            };
            let mut rsp = status::response(Code::Unavailable, &message);
            // Nothing was sent anywhere.
            rsp.headers_mut().insert(NOT_PROCESSED, HeaderValue::from_static("1"));
            return Either::Right(Either::Left(ready(Ok(rsp))));
        };
        let in_flight = endpoint.load.start();
        Either::Left(BalanceFuture {
            inner: endpoint.service.clone().call(req),
            in_flight: Some(in_flight),
            // A probe of an ejected endpoint likely opens a new connection:
            // its latency says little about the endpoint's.
            measure: endpoint.accrual.available(),
        })
    }
}

pin_project_lite::pin_project! {
    /// The chosen endpoint's answer; counts the call in flight meanwhile and
    /// measures it when it succeeds.
    pub struct BalanceFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        measure: bool,
    }
}

impl<F> Future for BalanceFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(rsp) = futures::ready!(this.inner.poll(cx));
        // Failure accrual marked failures with the endpoint that failed; a
        // call that waited for its connection measured the set-up too.
        if let Some(in_flight) = this.in_flight.take()
            && *this.measure
            && rsp.extensions().get::<ServedBy>().is_none()
            && rsp.extensions().get::<WaitedForConnect>().is_none()
        {
            in_flight.measured();
        }
        Poll::Ready(Ok(rsp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    fn set(n: u16) -> Vec<Arc<Endpoint<()>>> {
        (0..n)
            .map(|i| {
                let addr: SocketAddr = ([127, 0, 0, 1], 1000 + i).into();
                let accrual = Arc::new(AccrualState::new("d".into(), addr, 1, Counter::default()));
                Arc::new(Endpoint::new(addr, (), accrual))
            })
            .collect()
    }

    #[tokio::test]
    async fn spreads_over_equal_endpoints() {
        let endpoints = set(3);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let e = pick(&endpoints, None).expect("one");
            counts[usize::from(e.addr.port() - 1000)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 500), "{counts:?}");
    }

    #[tokio::test]
    async fn prefers_the_cheaper_and_avoids_the_excluded_and_ejected() {
        let endpoints = set(3);
        // Endpoint 0 is busy: 50 calls in flight.
        let busy: Vec<_> = (0..50).map(|_| endpoints[0].load.start()).collect();
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            counts[usize::from(pick(&endpoints, None).expect("one").addr.port() - 1000)] += 1;
        }
        assert!(counts[0] < 100, "{counts:?}");
        drop(busy);
        let excluded = endpoints[1].addr;
        let mut exclude = Exclude::default();
        exclude.add(excluded);
        let exclude = Some(&exclude);
        for _ in 0..100 {
            assert_ne!(pick(&endpoints, exclude).expect("one").addr, excluded);
        }
        endpoints[2].accrual.record(true);
        assert!(!endpoints[2].accrual.available());
        for _ in 0..100 {
            assert_eq!(pick(&endpoints, exclude).expect("one").addr, endpoints[0].addr);
        }
        // Only the excluded one is left: better it than nothing.
        endpoints[0].accrual.record(true);
        assert_eq!(pick(&endpoints, exclude).expect("one").addr, excluded);
        endpoints[1].accrual.record(true);
        assert!(pick(&endpoints, None).is_none());
        assert!(pick::<()>(&[], None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_waited_for_its_connection_is_not_measured() {
        let endpoints = set(1);
        let load = &endpoints[0].load;
        let slow_answer = |waited: bool| async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut rsp = status::response_for(meshwork_config::GrpcCode::Ok, "");
            if waited {
                rsp.extensions_mut().insert(WaitedForConnect);
            }
            Ok::<_, Infallible>(rsp)
        };
        let call = |waited| BalanceFuture {
            inner: slow_answer(waited),
            in_flight: Some(load.start()),
            measure: true,
        };
        let Ok(_) = call(true).await;
        let cost = load.cost(Instant::now());
        assert!(cost < 2_000.0, "the connect was measured: {cost} µs");
        let Ok(_) = call(false).await;
        let cost = load.cost(Instant::now());
        assert!(cost > 40_000.0, "the call was not measured: {cost} µs");
    }

    type Ok = tower::util::ServiceFn<fn(Request<()>) -> Answer>;

    fn ok_service() -> Ok {
        fn answer(_req: Request<()>) -> Answer {
            ready(Ok(status::response_for(meshwork_config::GrpcCode::Ok, "")))
        }
        tower::service_fn(answer as fn(Request<()>) -> Answer)
    }

    #[tokio::test(start_paused = true)]
    async fn calls_wait_for_discoverys_first_answer_but_not_forever() {
        let addr: SocketAddr = ([127, 0, 0, 1], 1000).into();
        let accrual = Arc::new(AccrualState::new("d".into(), addr, 1, Counter::default()));
        let set = Arc::new(EndpointSet::<Ok>::new("catalog".into()));
        let call = tokio::spawn(Balance::new(set.clone()).call(Request::new(())));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!call.is_finished(), "answered before discovery did");
        set.apply(vec![Change::Insert(addr, Endpoint::new(addr, ok_service(), accrual))]);
        let Ok(rsp) = call.await.expect("call");
        assert_eq!(rsp.headers().get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));

        // Discovery answered "nobody": no wait.
        let empty = Arc::new(EndpointSet::<Ok>::new("catalog".into()));
        empty.mark_answered();
        let started = Instant::now();
        let Ok(rsp) = Balance::new(empty).call(Request::new(())).await;
        assert_eq!(started.elapsed(), std::time::Duration::ZERO);
        assert!(rsp.headers().contains_key(NOT_PROCESSED));

        // Discovery never answers: the call gives up after the wait.
        let silent = Arc::new(EndpointSet::<Ok>::new("catalog".into()));
        let Ok(rsp) = Balance::new(silent).call(Request::new(())).await;
        assert!(started.elapsed() >= FIRST_ANSWER_WAIT, "{:?}", started.elapsed());
        assert!(rsp.headers().contains_key(NOT_PROCESSED));
    }

    #[test]
    fn exclude_keeps_the_last_four() {
        let mut e = Exclude::default();
        assert!(e.is_empty());
        for port in 1..=5u16 {
            e.add(([127, 0, 0, 1], port).into());
            e.add(([127, 0, 0, 1], port).into());
        }
        assert!(!e.contains(([127, 0, 0, 1], 1).into()));
        assert!((2..=5u16).all(|p| e.contains(([127, 0, 0, 1], p).into())));
    }
}
