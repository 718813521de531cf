//! Counters in this process: one keyed governor limiter (GCRA) per rule.
//! The default, for a single gateway; nothing to install.

use std::time::Duration;

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

use super::Verdict;

type Limiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

pub struct MemoryStore {
    /// By rule, in the rules' order, with the rule's emission interval.
    limiters: Vec<(Limiter, Duration, u32)>,
}

impl MemoryStore {
    /// One limiter per rule, from its emission interval and burst.
    pub fn new(rules: impl Iterator<Item = (Duration, u32)>) -> Self {
        let limiters = rules
            .map(|(interval, burst)| {
                let burst_nz = std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN);
                let quota = Quota::with_period(interval)
                    .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN))
                    .allow_burst(burst_nz);
                (
                    RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
                    interval,
                    burst,
                )
            })
            .collect();
        MemoryStore { limiters }
    }

    /// Counts one call against rule `rule` for `key`.
    pub fn check(&self, rule: usize, key: &String) -> Verdict {
        let Some((limiter, interval, burst)) = self.limiters.get(rule) else {
            return Verdict {
                allowed: true,
                remaining: 0,
                reset: Duration::ZERO,
                retry_after: Duration::ZERO,
            };
        };
        match limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Verdict {
                    allowed: true,
                    remaining,
                    reset: *interval * burst.saturating_sub(remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(limiter.clock().now());
                Verdict {
                    allowed: false,
                    remaining: 0,
                    reset: retry_after + *interval * burst.saturating_sub(1),
                    retry_after,
                }
            }
        }
    }

    pub fn retain_recent(&self) {
        for (limiter, _, _) in &self.limiters {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_the_wait_until_the_next_call() {
        // 2 per second, burst 3.
        let store = MemoryStore::new([(Duration::from_millis(500), 3)].into_iter());
        let key = "user:ann".to_string();
        let remaining: Vec<u32> = (0..3).map(|_| store.check(0, &key)).map(|v| v.remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = store.check(0, &key);
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_millis(400) && refused.retry_after <= Duration::from_millis(500));
        // Another key has its own budget.
        assert!(store.check(0, &"user:bob".to_string()).allowed);
    }
}
