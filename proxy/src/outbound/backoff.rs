//! Exponential backoff with jitter, for retries and for probing an ejected
//! endpoint. Jitter spreads the callers of a failed peer apart so they do
//! not come back in lockstep.

use std::time::Duration;

/// The ceiling of the `n`th wait (`n` from 1): `base` doubled `n - 1`
/// times, at most `max`.
pub fn ceiling(n: u32, base: Duration, max: Duration) -> Duration {
    let doublings = n.saturating_sub(1).min(32);
    base.saturating_mul(1u32 << doublings.min(31)).min(max)
}

/// "Full jitter": uniformly between zero and the ceiling. Used between
/// retries, where spreading matters more than waiting.
pub fn full_jitter(n: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = ceiling(n, base, max);
    ceiling.mul_f64(rand::random::<f64>())
}

/// "Equal jitter": between half the ceiling and the ceiling. Used to probe
/// an ejected endpoint, which must stay out for a while.
pub fn equal_jitter(n: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = ceiling(n, base, max);
    ceiling / 2 + (ceiling / 2).mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_up_to_max() {
        let (base, max) = (25 * MS, 250 * MS);
        let got: Vec<_> = (1..=6).map(|n| ceiling(n, base, max)).collect();
        assert_eq!(got, [25 * MS, 50 * MS, 100 * MS, 200 * MS, 250 * MS, 250 * MS]);
        assert_eq!(ceiling(0, base, max), 25 * MS);
        assert_eq!(ceiling(u32::MAX, base, max), max);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(30));
        for n in 1..=10 {
            let c = ceiling(n, base, max);
            for _ in 0..200 {
                let f = full_jitter(n, base, max);
                assert!(f <= c, "{f:?} > {c:?}");
                let e = equal_jitter(n, base, max);
                assert!(e >= c / 2 && e <= c, "{e:?} outside [{:?}, {c:?}]", c / 2);
            }
        }
    }
}
