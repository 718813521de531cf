//! Peak-EWMA load of one endpoint (Finagle's, as in tower's `PeakEwma`):
//! an exponentially weighted moving average of response latency that jumps
//! up at once to any slower sample ("peak") and decays slowly, multiplied
//! by the calls in flight plus one. The balancer sends each call to the
//! cheaper of two endpoints picked at random.
//!
//! Lock-free: the estimate and its timestamp share one `AtomicU64`
//! (f32 microseconds, u32 milliseconds), updated by compare-and-swap, so
//! every connection's calls can measure the same endpoint without a lock.
//! Only successful calls are measured: a fast error says nothing about how
//! fast the endpoint serves (failure accrual deals with failing endpoints).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// The estimate of an endpoint nothing is known about yet. Optimistic on
/// purpose: a new replica is chosen and measured at once (its first sample
/// replaces this, being a peak) instead of being starved by established fast
/// ones, as a pessimistic default (Linkerd's 30 ms) does under light load,
/// where it takes tens of seconds of decay to compete.
const DEFAULT_RTT: Duration = Duration::from_millis(1);
/// How fast old samples lose weight, and how fast an idle endpoint's
/// estimate falls back towards zero (so that it is tried again). Shorter
/// than Finagle's and Linkerd's 10 s: between sidecars on one host latencies
/// are sub-millisecond and a moment of scheduling noise reads as a 10-20×
/// peak, which at 10 s would keep a healthy replica out of a light load for
/// half a minute; at 1 s it is tried again within a few seconds, while a
/// really slow replica still gets only the odd call that re-measures it.
const DECAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct PeakEwma {
    epoch: Instant,
    /// High 32 bits: the estimate in µs as f32 bits; low: its time in ms since `epoch`.
    state: AtomicU64,
    pending: AtomicU32,
}

fn pack(rtt_us: f32, at_ms: u32) -> u64 {
    (u64::from(rtt_us.to_bits()) << 32) | u64::from(at_ms)
}

fn unpack(state: u64) -> (f32, u32) {
    (f32::from_bits((state >> 32) as u32), state as u32)
}

fn decay_weight(elapsed_ms: u32) -> f64 {
    (-f64::from(elapsed_ms) / DECAY.as_millis() as f64).exp()
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            epoch: Instant::now(),
            state: AtomicU64::new(pack(DEFAULT_RTT.as_micros() as f32, 0)),
            pending: AtomicU32::new(0),
        }
    }
}

impl PeakEwma {
    fn now_ms(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_millis() as u32
    }

    /// The load the balancer compares: decayed latency × (in flight + 1).
    pub fn cost(&self, now: Instant) -> f64 {
        let (rtt, at) = unpack(self.state.load(Ordering::Relaxed));
        let decayed = f64::from(rtt) * decay_weight(self.now_ms(now).wrapping_sub(at));
        decayed * f64::from(self.pending.load(Ordering::Relaxed) + 1)
    }

    /// Counts a call in flight until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.pending.fetch_add(1, Ordering::Relaxed);
        InFlight {
            ewma: self.clone(),
            sent: Instant::now(),
        }
    }

    fn observe(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_micros() as f64;
        let now_ms = self.now_ms(now);
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (estimate, at) = unpack(current);
            let estimate = f64::from(estimate);
            let next = if sample > estimate {
                sample
            } else {
                let w = decay_weight(now_ms.wrapping_sub(at));
                estimate * w + sample * (1.0 - w)
            };
            match self.state.compare_exchange_weak(
                current,
                pack(next as f32, now_ms),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }
}

/// A call in flight on an endpoint.
pub struct InFlight {
    ewma: Arc<PeakEwma>,
    sent: Instant,
}

impl InFlight {
    /// The call was answered successfully: its latency joins the estimate.
    pub fn measured(self) {
        let now = Instant::now();
        self.ewma.observe(now.saturating_duration_since(self.sent), now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ewma.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_at_once_and_decays_slowly() {
        let e = PeakEwma::default();
        let now = e.epoch;
        assert!((e.cost(now) - 1_000.0).abs() < 1.0);
        e.observe(Duration::from_millis(100), now);
        assert!((e.cost(now) - 100_000.0).abs() < 1.0, "peak taken at once");
        e.observe(Duration::from_millis(1), now + Duration::from_millis(10));
        let after = e.cost(now + Duration::from_millis(10));
        assert!(after > 95_000.0, "one fast sample does not erase a peak: {after}");
        // Three seconds idle: the estimate has decayed towards zero.
        let idle = e.cost(now + Duration::from_secs(3));
        assert!(idle < 6_000.0, "{idle}");
    }

    #[test]
    fn calls_in_flight_raise_the_cost() {
        let e = Arc::new(PeakEwma::default());
        let now = e.epoch;
        let one = e.cost(now);
        let a = e.start();
        let b = e.start();
        assert!((e.cost(now) - 3.0 * one).abs() < 1.0);
        drop(a);
        b.measured();
        assert_eq!(e.pending.load(Ordering::Relaxed), 0);
    }
}
