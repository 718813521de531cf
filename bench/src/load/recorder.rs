//! Latencies into an HDR histogram, failures by code (a gRPC status name or
//! an HTTP status, with the first message seen for each, so a report says
//! why), and the summary a load step reports.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;

use super::Failure;

/// Highest latency the histogram tracks exactly (larger ones saturate).
const MAX_TRACKED_NS: u64 = 120_000_000_000;

/// What one caller saw; callers' recorders are merged at the end of a step.
pub struct Recorder {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    error_examples: BTreeMap<String, String>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            // Nanoseconds, 3 significant digits: 0.1 % resolution at any latency.
            histogram: Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3).expect("valid histogram bounds"),
            errors: BTreeMap::new(),
            error_examples: BTreeMap::new(),
        }
    }

    /// A call's outcome: its latency when it succeeded, its status otherwise.
    pub fn record(&mut self, latency: Duration, outcome: Result<(), Failure>) {
        match outcome {
            Ok(()) => {
                let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
                self.histogram.saturating_record(ns);
            }
            Err(Failure { code, message }) => {
                *self.errors.entry(code.clone()).or_default() += 1;
                self.error_examples.entry(code).or_insert(message);
            }
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        // Same bounds on both sides, so adding cannot fail; saturate if it did.
        if self.histogram.add(&other.histogram).is_err() {
            for value in other.histogram.iter_recorded() {
                self.histogram
                    .saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        for (code, message) in other.error_examples {
            self.error_examples.entry(code).or_insert(message);
        }
    }

    pub fn finish(self, elapsed: Duration) -> LoadResult {
        let h = &self.histogram;
        let at = |q: f64| Duration::from_nanos(h.value_at_quantile(q));
        LoadResult {
            calls: h.len(),
            elapsed,
            latency: Latency {
                p50: at(0.5),
                p90: at(0.9),
                p99: at(0.99),
                p999: at(0.999),
                max: Duration::from_nanos(h.max()),
            },
            errors: self.errors,
            error_examples: self.error_examples,
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// Latency percentiles of the successful calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Latency {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Latency {
    /// Percentiles never decrease: p50 ≤ p90 ≤ p99 ≤ p99.9 ≤ max.
    pub fn is_ordered(&self) -> bool {
        self.p50 <= self.p90 && self.p90 <= self.p99 && self.p99 <= self.p999 && self.p999 <= self.max
    }
}

/// A load step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadResult {
    /// Successful calls.
    pub calls: u64,
    pub elapsed: Duration,
    pub latency: Latency,
    /// Failed calls by code (gRPC status name, or `HTTP <status>`).
    pub errors: BTreeMap<String, u64>,
    /// The first status message seen for each code in `errors`.
    pub error_examples: BTreeMap<String, String>,
}

impl LoadResult {
    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.calls as f64 / secs } else { 0.0 }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_errors() {
        let mut a = Recorder::new();
        for ms in 1..=100 {
            a.record(Duration::from_millis(ms), Ok(()));
        }
        let mut b = Recorder::new();
        b.record(Duration::from_secs(1), Ok(()));
        b.record(
            Duration::from_millis(3),
            Err(tonic::Status::unavailable("first").into()),
        );
        b.record(
            Duration::from_millis(3),
            Err(tonic::Status::unavailable("second").into()),
        );
        a.merge(b);
        let result = a.finish(Duration::from_secs(2));
        assert_eq!(result.calls, 101);
        assert!((result.rate() - 50.5).abs() < 1e-9);
        assert_eq!(result.errors.get("Unavailable"), Some(&2));
        assert_eq!(result.error_count(), 2);
        assert_eq!(
            result.error_examples.get("Unavailable").map(String::as_str),
            Some("first")
        );
        let l = result.latency;
        assert!(l.is_ordered(), "{l:?}");
        let near = |d: Duration, ms: f64| (d.as_secs_f64() * 1000.0 - ms).abs() / ms < 0.01;
        assert!(near(l.p50, 51.0), "{l:?}");
        assert!(near(l.max, 1000.0), "{l:?}");
    }
}
