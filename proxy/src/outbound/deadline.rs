//! Deadlines: the caller's `grpc-timeout`, cut to the method's (or the
//! service's) configured cap, bounds the whole call including every retry
//! and backoff. When it runs out the caller gets `DEADLINE_EXCEEDED` naming
//! the deadline and the destination, never `UNAVAILABLE`.
//!
//! The deadline travels down with the request ([`Deadlined`]); the retry
//! layer, which knows when each attempt starts, passes the *remaining* time
//! on in `grpc-timeout`. A malformed `grpc-timeout` is refused with
//! `INVALID_ARGUMENT`: quietly dropping a deadline the caller meant to set
//! could leave it waiting forever, and only hand-written clients send one.
//! The deadline covers the call up to its response headers (and a held
//! unary body); a stream's body is bounded by the peer, which gets the
//! remaining time.

use std::{
    convert::Infallible,
    fmt,
    future::{Future, Ready, ready},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use crate::body::RecvBody;
use futures::future::Either;
use http::{HeaderName, HeaderValue, Request, Response};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use super::policy::PolicyHandle;
use crate::{
    body::ProxyBody,
    grpc::{Code, status},
};

pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// When the call must be over, and how long it was given (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    pub budget: Duration,
}

impl Deadline {
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// A request as this layer passes it on: with its deadline, when it has
/// one. A field rather than a request extension: the first extension
/// allocates the request's extension map, two allocations on every call
/// that has a deadline, which most production calls do.
pub struct Deadlined {
    pub req: Request<RecvBody>,
    pub deadline: Option<Deadline>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeoutError {
    #[error("expected 1 to 8 digits and a unit (H, M, S, m, u or n)")]
    Malformed,
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits, then one of
/// `H` (hours), `M` (minutes), `S`, `m`, `u`, `n`.
pub fn parse_timeout(value: &[u8]) -> Result<Duration, TimeoutError> {
    let (&unit, digits) = value.split_last().ok_or(TimeoutError::Malformed)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(TimeoutError::Malformed);
    }
    let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(TimeoutError::Malformed),
    })
}

/// From this much time left on, the remaining time is sent in whole
/// milliseconds (as Envoy does): the peer gives up at most 1 % early, and the
/// calls sent within one millisecond send the same value, which HPACK then
/// sends as an index into its table. In the finest unit every call's value
/// was new: a fresh literal to encode, decode and add to the table on every
/// call, about 8 % of the outbound sidecar's instructions per call.
const WHOLE_MILLIS_FROM: Duration = Duration::from_millis(100);

/// Encodes `timeout` in the finest unit whose value fits in 8 digits, but
/// no finer than milliseconds from [`WHOLE_MILLIS_FROM`] on, rounding down
/// (the peer gives up a little early rather than late).
pub fn encode_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    const UNITS: [(u128, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    let nanos = timeout.as_nanos();
    let finest = if timeout >= WHOLE_MILLIS_FROM { 2 } else { 0 };
    let (value, unit) = UNITS[finest..]
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|(value, _)| *value <= MAX)
        .unwrap_or((MAX, b'H'));
    // Digits on the stack: at most 8 plus the unit.
    let mut buf = [0u8; 9];
    let mut len = 0;
    let mut digits = [0u8; 8];
    let mut v = value;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (v % 10) as u8;
        count += 1;
        v /= 10;
        if v == 0 || count == digits.len() {
            break;
        }
    }
    for d in digits[..count].iter().rev() {
        buf[len] = *d;
        len += 1;
    }
    buf[len] = unit;
    len += 1;
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("99999999H"))
}

/// A `Duration` as people write it in a message: `200ms`, `1.5s`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{d:?}")
        }
    }
}

#[derive(Clone)]
pub struct DeadlineLayer {
    policy: PolicyHandle,
}

impl DeadlineLayer {
    pub fn new(policy: PolicyHandle) -> Self {
        DeadlineLayer { policy }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadlines<S>;

    fn layer(&self, inner: S) -> Deadlines<S> {
        Deadlines {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Deadlines<S> {
    inner: S,
    policy: PolicyHandle,
}

type Answer = Ready<Result<Response<ProxyBody>, Infallible>>;

impl<S> Service<Request<RecvBody>> for Deadlines<S>
where
    S: Service<Deadlined, Response = Response<ProxyBody>, Error = Infallible>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Either<DeadlineFuture<S::Future>, Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<RecvBody>) -> Self::Future {
        let asked = match req.headers().get(GRPC_TIMEOUT).map(|v| parse_timeout(v.as_bytes())) {
            None => None,
            Some(Ok(timeout)) => Some(timeout),
            Some(Err(error)) => {
                let value = req
                    .headers()
                    .get(GRPC_TIMEOUT)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()));
                let message = format!("malformed grpc-timeout '{}': {error}", value.unwrap_or_default());
                return Either::Right(ready(Ok(status::response(Code::InvalidArgument, &message))));
            }
        };
        let policy = self.policy.load();
        let cap = policy.timeout(req.uri().path());
        let budget = match (asked, cap) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        };
        let Some(budget) = budget else {
            return Either::Left(DeadlineFuture {
                inner: self.inner.call(Deadlined { req, deadline: None }),
                sleep: None,
                budget: Duration::ZERO,
                destination: None,
            });
        };
        if budget.is_zero() {
            // Spent before it started: not sent at all, as gRPC clients do.
            return Either::Right(ready(Ok(exceeded(budget, &policy.name))));
        }
        let at = Instant::now() + budget;
        let deadline = Some(Deadline { at, budget });
        Either::Left(DeadlineFuture {
            inner: self.inner.call(Deadlined { req, deadline }),
            sleep: Some(Box::pin(tokio::time::sleep_until(at))),
            budget,
            destination: Some(policy.name.clone()),
        })
    }
}

pin_project_lite::pin_project! {
    /// The call, or `DEADLINE_EXCEEDED` when its deadline passes first.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        // Boxed: most calls carry no deadline and should not carry a
        // timer's space (112 bytes) either.
        sleep: Option<Pin<Box<Sleep>>>,
        budget: Duration,
        destination: Option<Arc<str>>,
    }
}

impl<F> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(rsp) = this.inner.poll(cx) {
            return Poll::Ready(rsp);
        }
        let expired = this
            .sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if !expired {
            return Poll::Pending;
        }
        let destination = this.destination.as_deref().unwrap_or("the destination");
        Poll::Ready(Ok(exceeded(*this.budget, destination)))
    }
}

/// The caller's answer when the deadline of `budget` has passed.
fn exceeded(budget: Duration, destination: &str) -> Response<ProxyBody> {
    let message = format!("deadline of {} exceeded calling {destination}", Human(budget));
    tracing::debug!(%message, "deadline exceeded");
    status::response(Code::DeadlineExceeded, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        let ok = |s: &str| parse_timeout(s.as_bytes()).expect(s);
        assert_eq!(ok("2H"), Duration::from_secs(7200));
        assert_eq!(ok("3M"), Duration::from_secs(180));
        assert_eq!(ok("5S"), Duration::from_secs(5));
        assert_eq!(ok("200m"), Duration::from_millis(200));
        assert_eq!(ok("1500u"), Duration::from_micros(1500));
        assert_eq!(ok("99999999n"), Duration::from_nanos(99_999_999));
        assert_eq!(ok("0m"), Duration::ZERO);
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in ["", "m", "5", "123456789m", "5s", "-5m", "5 m", "1.5S", "5mm"] {
            assert_eq!(parse_timeout(bad.as_bytes()), Err(TimeoutError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn encodes_in_the_finest_unit_that_fits() {
        let enc = |d: Duration| encode_timeout(d).to_str().expect("ascii").to_string();
        assert_eq!(enc(Duration::from_nanos(5)), "5n");
        assert_eq!(enc(Duration::from_millis(50)), "50000000n");
        assert_eq!(enc(Duration::from_micros(99_999)), "99999000n");
        assert_eq!(enc(Duration::from_millis(100)), "100m");
        assert_eq!(enc(Duration::from_millis(200)), "200m");
        assert_eq!(enc(Duration::from_secs(30)), "30000m");
        assert_eq!(enc(Duration::from_secs(300)), "300000m");
        assert_eq!(enc(Duration::from_secs(200_000)), "200000S");
        assert_eq!(enc(Duration::from_secs(200_000_000)), "3333333M");
        assert_eq!(enc(Duration::ZERO), "0n");
        assert_eq!(enc(Duration::MAX), "99999999H");
    }

    #[test]
    fn calls_sent_within_one_millisecond_send_the_same_value() {
        let enc = |us: u64| {
            encode_timeout(Duration::from_micros(us))
                .to_str()
                .expect("ascii")
                .to_string()
        };
        assert_eq!(enc(29_999_001), "29999m");
        assert_eq!(enc(29_999_999), "29999m");
        assert_eq!(enc(150_999), "150m");
    }

    #[test]
    fn encoding_round_trips_within_the_unit() {
        for ms in [1u64, 7, 199, 200, 1234, 59_999, 3_600_000] {
            let d = Duration::from_millis(ms) + Duration::from_nanos(123);
            let back = parse_timeout(encode_timeout(d).as_bytes()).expect("parses");
            assert!(back <= d && d - back < Duration::from_millis(1), "{d:?} -> {back:?}");
        }
    }

    #[test]
    fn messages_name_durations_like_people() {
        assert_eq!(Human(Duration::from_millis(200)).to_string(), "200ms");
        assert_eq!(Human(Duration::from_secs(2)).to_string(), "2s");
        assert_eq!(Human(Duration::from_micros(1500)).to_string(), "1.5ms");
    }
}
