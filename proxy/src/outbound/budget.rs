//! The retry budget of one destination, over a sliding window of the last ten
//! whole seconds: the retries in the window may be at most `ratio` of the
//! calls in it plus a floor of `min_per_second` × the window's length (the
//! seconds since the budget was made, up to ten), so a quiet destination can
//! still retry. The floor is for the whole window, not a refill per second: a
//! burst may spend all of it at once (100 retries with the default 10/s), and
//! then waits for old seconds to leave the window. A failing destination thus
//! sees at most `(1 + ratio)` times its traffic plus 10 × `min_per_second` in
//! any ten seconds, never a retry storm.
//!
//! Lock-free: ten one-second slots of atomic counters. tower's `TpsBudget`
//! does the same arithmetic but takes a mutex on every call, and the budget
//! is touched by every call; a slot being recycled by two threads at once
//! may lose a count or two, which a budget can afford.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::time::Instant;

const SLOTS: usize = 10;

#[derive(Debug, Default)]
struct Slot {
    /// Which second (since the budget was made) these counts belong to.
    second: AtomicU64,
    calls: AtomicU64,
    retries: AtomicU64,
}

#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    start: Instant,
    slots: [Slot; SLOTS],
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        RetryBudget {
            ratio: ratio.max(0.0),
            min_per_second,
            start: Instant::now(),
            slots: Default::default(),
        }
    }

    /// Counts a call (not a retry).
    pub fn deposit(&self) {
        self.deposit_at(self.start.elapsed());
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(self.start.elapsed())
    }

    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % SLOTS as u64) as usize];
        let seen = slot.second.load(Relaxed);
        if seen != second && slot.second.compare_exchange(seen, second, Relaxed, Relaxed).is_ok() {
            slot.calls.store(0, Relaxed);
            slot.retries.store(0, Relaxed);
        }
        slot
    }

    fn deposit_at(&self, elapsed: Duration) {
        self.slot(elapsed.as_secs()).calls.fetch_add(1, Relaxed);
    }

    fn withdraw_at(&self, elapsed: Duration) -> bool {
        let now = elapsed.as_secs();
        let current = self.slot(now);
        let (mut calls, mut retries) = (0u64, 0u64);
        for slot in &self.slots {
            if now - slot.second.load(Relaxed).min(now) < SLOTS as u64 {
                calls += slot.calls.load(Relaxed);
                retries += slot.retries.load(Relaxed);
            }
        }
        let seconds = (now + 1).min(SLOTS as u64);
        let allowed = self.ratio * calls as f64 + f64::from(self.min_per_second) * seconds as f64;
        if (retries + 1) as f64 <= allowed {
            current.retries.fetch_add(1, Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Withdraws until refused; how many were granted.
    fn drain(b: &RetryBudget, when: Duration) -> u32 {
        let mut n = 0;
        while b.withdraw_at(when) {
            n += 1;
            assert!(n < 100_000);
        }
        n
    }

    #[test]
    fn ratio_of_calls_plus_floor() {
        let b = RetryBudget::new(0.2, 10);
        for _ in 0..1000 {
            b.deposit_at(at(100));
        }
        // 20 % of 1000 calls, plus 10 for the first second.
        assert_eq!(drain(&b, at(200)), 210);
    }

    #[test]
    fn floor_alone_for_a_quiet_destination() {
        let b = RetryBudget::new(0.2, 10);
        assert_eq!(drain(&b, at(0)), 10);
        // One second later, another 10.
        assert_eq!(drain(&b, at(1_000)), 10);
    }

    #[test]
    fn zero_ratio_and_zero_floor_never_retry() {
        let b = RetryBudget::new(0.0, 0);
        for _ in 0..100 {
            b.deposit_at(at(0));
        }
        assert_eq!(drain(&b, at(0)), 0);
    }

    #[test]
    fn calls_older_than_the_window_expire() {
        let b = RetryBudget::new(0.5, 0);
        for _ in 0..100 {
            b.deposit_at(at(0));
        }
        assert_eq!(drain(&b, at(500)), 50);
        // Eleven seconds on, those calls (and retries) are out of the window.
        assert_eq!(drain(&b, at(11_000)), 0);
        for _ in 0..10 {
            b.deposit_at(at(11_500));
        }
        assert_eq!(drain(&b, at(11_600)), 5);
    }

    #[test]
    fn steady_failure_stays_within_ratio_plus_floor() {
        // 100 calls a second for 10 s, each asking for one retry.
        let b = RetryBudget::new(0.2, 10);
        let mut granted = 0;
        for ms in (0..10_000).step_by(10) {
            b.deposit_at(at(ms));
            if b.withdraw_at(at(ms)) {
                granted += 1;
            }
        }
        assert!(granted <= 200 + 100, "{granted}");
        assert!(granted >= 200, "{granted}");
    }

    #[test]
    fn every_ten_second_window_holds_the_ratio_plus_the_windows_floor() {
        // 100 calls a second for 30 s, each asking for one retry; granted
        // retries are counted per second, then summed over every window.
        let b = RetryBudget::new(0.2, 10);
        let mut per_second = [0u32; 30];
        for ms in (0..30_000u64).step_by(10) {
            b.deposit_at(at(ms));
            if b.withdraw_at(at(ms)) {
                per_second[(ms / 1000) as usize] += 1;
            }
        }
        for end in 10..=30 {
            let window: u32 = per_second[end - 10..end].iter().sum();
            // 20 % of 1000 calls, plus 10 × 10 s of floor.
            assert!(window <= 200 + 100, "seconds {}..{end}: {window}", end - 10);
        }
        // Once the floor is spent, the steady state is the ratio alone.
        let last: u32 = per_second[20..].iter().sum();
        assert!((190..=300).contains(&last), "{last}");
    }
}
