//! Retries, only where they are safe:
//!
//! - any call whose attempt provably never reached the app: our connection
//!   failed, the stream was refused or fell above a GOAWAY, every replica
//!   was ejected, or the peer sidecar said its app refused the connection
//!   (the `meshwork-not-processed` marker, see `forward.rs`);
//! - an idempotent call (contract `idempotency_level`, or mesh.toml's
//!   override) that ended with `UNAVAILABLE` or a status of the service's
//!   `retry_on`, read from the headers (trailers-only) or from the
//!   trailers, for which a single-message response is held (up to the
//!   replay cap); or whose response stream broke.
//!
//! Only a body that could be kept whole (a single-message request within
//! `max_replay_bytes`) is sent again. A retry costs one unit of the
//! destination's budget (refused when spent), waits an exponential backoff
//! with full jitter, never starts when the deadline would pass during the
//! backoff, asks the balancer for another endpoint than those that failed
//! this call ([`Exclude`]), and gets the remaining deadline in `grpc-timeout`.
//! The answer carries [`Attempts`] when more than one was made.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use crate::body::RecvBody;
use futures::FutureExt;
use http::{Request, Response, request::Parts};
use meshwork_config::GrpcCode;
use tower::{Layer, Service, ServiceExt};

use super::{
    accrual::ServedBy,
    backoff,
    balance::Exclude,
    budget::RetryBudget,
    deadline::{Deadline, Deadlined, GRPC_TIMEOUT, encode_timeout},
    fault::Injected,
    metrics::RetryCounters,
    policy::{DestinationPolicy, PolicyHandle},
    replay::{ReadAhead, ReplayBody, read_ahead},
    trailers::{Ending, grpc_status, hold},
};
use crate::{
    body::ProxyBody,
    forward::NOT_PROCESSED,
    grpc::{Code, status},
};

/// Response extension: how many attempts a call took, when more than one
/// (for the telemetry layers above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts(pub u32);

struct Shared {
    policy: PolicyHandle,
    budget: RetryBudget,
    counters: RetryCounters,
}

#[derive(Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    /// One per destination: the budget is the destination's.
    pub fn new(policy: PolicyHandle, counters: RetryCounters) -> Self {
        let retry = policy.load().retry.clone();
        RetryLayer {
            shared: Arc::new(Shared {
                policy,
                budget: RetryBudget::new(retry.budget_ratio, retry.min_retries_per_second),
                counters,
            }),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

type Answer = Result<Response<ProxyBody>, Infallible>;

/// Boxed, one allocation per call: the loop awaits body reads, attempts
/// and backoffs (a hand-written state machine would save the allocation at
/// the cost of much harder code). A call that cannot be retried is boxed
/// too, rather than made a second variant of a named future: that variant
/// would put its space into every unary call's future.
type BoxedAnswer = Pin<Box<dyn Future<Output = Answer> + Send>>;

impl<S> Service<Deadlined> for Retry<S>
where
    S: Service<Request<ReplayBody>, Response = Response<ProxyBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxedAnswer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each attempt waits for the inner service's readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, Deadlined { req, deadline }: Deadlined) -> Self::Future {
        let shared = &self.shared;
        shared.budget.deposit();
        let policy = shared.policy.load_full();
        let rule = policy.method(req.uri().path());
        if rule.single_request && policy.retry.max_attempts > 1 {
            let method = Method {
                idempotent: rule.idempotent,
                single_response: rule.single_response,
            };
            return Box::pin(call(self.inner.clone(), shared.clone(), policy, method, req, deadline));
        }
        // Streamed once: no copy of the request is kept.
        let (parts, body) = req.into_parts();
        let req = attempt_request(Some(parts), None, ReplayBody::once(body), deadline, Exclude::default());
        Box::pin(self.inner.clone().oneshot(req).map(answer_once))
    }
}

fn answer_once(rsp: Answer) -> Answer {
    let Ok(rsp) = rsp;
    Ok(answer(rsp, 1))
}

/// What the retry loop needs to know of the called method.
#[derive(Clone, Copy)]
struct Method {
    idempotent: bool,
    single_response: bool,
}

/// What to do after an attempt.
enum Verdict {
    Answer(Response<ProxyBody>),
    /// Worth another attempt; the response to give if none is made.
    Retry(Response<ProxyBody>),
}

/// A call that may be retried: its request read ahead (when it fits the
/// replay cap), then attempts until one gives an answer.
///
/// A plain function returning an `async move` block rather than an `async
/// fn`: an async fn keeps its arguments twice in its future (as captured
/// and as locals), and this future lives as long as the call.
fn call<S>(
    mut inner: S,
    shared: Arc<Shared>,
    policy: Arc<DestinationPolicy>,
    method: Method,
    req: Request<RecvBody>,
    deadline: Option<Deadline>,
) -> impl Future<Output = Answer> + Send
where
    S: Service<Request<ReplayBody>, Response = Response<ProxyBody>, Error = Infallible> + Send + 'static,
    S::Future: Send,
{
    let (parts, body) = req.into_parts();
    async move {
        let retry = &policy.retry;
        let replay = match read_ahead(body, retry.max_replay_bytes).await {
            ReadAhead::Complete(replay) => replay,
            ReadAhead::TooLarge(body) => {
                // Sent once: no copy of the request is kept. Boxed, as this
                // rare path's space would otherwise be in every call's future.
                let req = attempt_request(Some(parts), None, body, deadline, Exclude::default());
                return Box::pin(inner.oneshot(req).map(answer_once)).await;
            }
            ReadAhead::Failed(error) => {
                let message = format!("the request body broke off: {error}");
                return Ok(status::response_for(GrpcCode::Cancelled, &message));
            }
        };

        let mut exclude = Exclude::default();
        let mut attempt = 1u32;
        loop {
            // The attempt's response lives in this block only, so the
            // backoff below does not keep its space.
            let wait = {
                let req = attempt_request(None, Some(&parts), replay.body(), deadline, exclude);
                let Ok(rsp) = (&mut inner).oneshot(req).await;
                let last = attempt >= retry.max_attempts;
                let verdict = match judge(rsp, &policy, method, last) {
                    Judged::Now(verdict) => verdict,
                    // Boxed: holding a response to its trailers is a large
                    // future needed only for a moment; unboxed, its space
                    // would sit in every call's future for as long as the
                    // call waits upstream.
                    Judged::AtTrailers(rsp) => Box::pin(judge_trailers(rsp, &policy, retry.max_replay_bytes)).await,
                };
                let rsp = match verdict {
                    Verdict::Answer(rsp) => return Ok(answer(rsp, attempt)),
                    Verdict::Retry(rsp) => rsp,
                };
                let wait = backoff::full_jitter(attempt, retry.backoff_base, retry.backoff_max);
                if deadline.is_some_and(|d| d.remaining() <= wait) {
                    return Ok(answer(rsp, attempt));
                }
                if !shared.budget.withdraw() {
                    shared.counters.refused.inc();
                    tracing::debug!(destination = %policy.name, "retry budget spent; not retrying");
                    return Ok(answer(rsp, attempt));
                }
                shared.counters.retries.inc();
                if let Some(ServedBy(addr)) = rsp.extensions().get::<ServedBy>() {
                    exclude.add(*addr);
                }
                wait
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// What an attempt's response head says.
enum Judged {
    Now(Verdict),
    /// Only the trailers can tell: the status is not in the headers.
    AtTrailers(Response<ProxyBody>),
}

/// Decides on one attempt's response from its head, which is enough for
/// most calls (those that cannot be retried on their status, and
/// trailers-only answers) without waiting or allocating.
fn judge(rsp: Response<ProxyBody>, policy: &DestinationPolicy, method: Method, last: bool) -> Judged {
    let verdict = if last || rsp.extensions().get::<Injected>().is_some() {
        Verdict::Answer(rsp)
    } else if rsp.headers().contains_key(NOT_PROCESSED) {
        Verdict::Retry(rsp)
    } else if !method.idempotent {
        Verdict::Answer(rsp)
    } else {
        match grpc_status(rsp.headers()) {
            Some(code) if policy.retries_on(code) => Verdict::Retry(rsp),
            Some(_) => Verdict::Answer(rsp),
            None if !method.single_response => Verdict::Answer(rsp),
            None => return Judged::AtTrailers(rsp),
        }
    };
    Judged::Now(verdict)
}

/// Decides on a single-message response by its trailers, holding its body
/// until they come.
async fn judge_trailers(rsp: Response<ProxyBody>, policy: &DestinationPolicy, cap: usize) -> Verdict {
    match hold(rsp, cap).await {
        (rsp, Ending::Status(Some(code))) if policy.retries_on(code) => Verdict::Retry(rsp),
        (rsp, Ending::Status(_) | Ending::TooLarge) => Verdict::Answer(rsp),
        (_, Ending::Broken(reason)) => {
            let message = format!("the response from {} broke off: {reason}", policy.name);
            Verdict::Retry(status::response(Code::Unavailable, &message))
        }
    }
}

/// The request of one attempt: the original parts (moved for a single
/// attempt, else copied), its body, the remaining deadline and the
/// endpoint to avoid.
fn attempt_request(
    owned: Option<Parts>,
    borrowed: Option<&Parts>,
    body: ReplayBody,
    deadline: Option<Deadline>,
    exclude: Exclude,
) -> Request<ReplayBody> {
    let mut req = match (owned, borrowed) {
        (Some(parts), _) => Request::from_parts(parts, body),
        (None, Some(parts)) => {
            let mut req = Request::new(body);
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = parts.uri.clone();
            *req.version_mut() = parts.version;
            *req.headers_mut() = parts.headers.clone();
            req
        }
        (None, None) => Request::new(body),
    };
    if let Some(deadline) = deadline {
        req.headers_mut()
            .insert(GRPC_TIMEOUT, encode_timeout(deadline.remaining()));
    }
    if !exclude.is_empty() {
        req.extensions_mut().insert(exclude);
    }
    req
}

/// The response as the caller gets it: without our internal marker, and
/// with the attempt count when there were retries.
fn answer(mut rsp: Response<ProxyBody>, attempts: u32) -> Response<ProxyBody> {
    rsp.headers_mut().remove(NOT_PROCESSED);
    if attempts > 1 {
        rsp.extensions_mut().insert(Attempts(attempts));
    }
    rsp
}
