//! The golden metrics (success rate, requests per second, latency
//! percentiles, retries, budget refusals, ejections) over a window, from two
//! scrapes of the sidecars' counters. The arithmetic follows Prometheus:
//! a counter that went down was reset and counts from zero (as `increase`
//! does), and percentiles interpolate linearly inside the bucket that holds
//! the rank, as `histogram_quantile` does.

use std::collections::BTreeMap;

use serde::Serialize;

use super::scrape::{CallCounts, Snapshot};

/// What a counter grew by between two readings; a counter that went down
/// was reset (its process restarted), so all of its new value is growth.
pub fn increase(before: f64, after: f64) -> f64 {
    if after >= before { after - before } else { after }
}

/// `histogram_quantile(q, …)` over cumulative buckets `(le, count)` sorted
/// by `le` and ending with `+Inf`. `None` when nothing was observed.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_le, total) = buckets.last()?;
    if !last_le.is_infinite() || total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|&(_, count)| count >= rank)?;
    let (upper, count) = buckets[i];
    if upper.is_infinite() {
        // Prometheus answers with the highest finite bound.
        return Some(if i == 0 { 0.0 } else { buckets[i - 1].0 });
    }
    let (lower, below) = if i == 0 {
        (0.0_f64.min(upper), 0.0)
    } else {
        buckets[i - 1]
    };
    if i == 0 && upper <= 0.0 {
        return Some(upper);
    }
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / in_bucket)
}

/// One service's or one edge's figures over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Golden {
    /// Calls that arrived in the window.
    pub requests: f64,
    /// Calls that ended in the window, and those that ended with status OK.
    pub responses: f64,
    pub ok: f64,
    pub rps: f64,
    /// `ok / responses`; `None` when nothing ended.
    pub success_rate: Option<f64>,
    /// Seconds.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStat {
    pub name: String,
    #[serde(flatten)]
    pub golden: Golden,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeStat {
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub golden: Golden,
    pub retries: f64,
    pub retries_refused: f64,
    pub ejections: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stat {
    /// The time between the two scrapes compared, in seconds.
    pub window_seconds: f64,
    pub services: Vec<ServiceStat>,
    pub edges: Vec<EdgeStat>,
}

/// Calls summed over sidecars: counts add, buckets add bound by bound.
#[derive(Default)]
struct Sum {
    requests: f64,
    responses: f64,
    ok: f64,
    buckets: Vec<(f64, f64)>,
}

impl Sum {
    fn add(&mut self, before: Option<&CallCounts>, after: &CallCounts) {
        let zero = CallCounts::default();
        let before = before.unwrap_or(&zero);
        self.requests += increase(before.requests, after.requests);
        self.responses += increase(before.responses, after.responses);
        self.ok += increase(before.ok, after.ok);
        // A reset shows as the +Inf count going down: then every bucket counts anew.
        let reset = after.buckets.last().map(|b| b.1) < before.buckets.last().map(|b| b.1);
        let grown = after.buckets.iter().map(|&(le, count)| {
            let old = match reset {
                true => 0.0,
                false => before.buckets.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1),
            };
            (le, (count - old).max(0.0))
        });
        // Every sidecar uses the same bounds; series with others would not add up.
        if self.buckets.is_empty() {
            self.buckets = grown.collect();
        } else if self.buckets.len() == after.buckets.len() {
            for (slot, (le, more)) in self.buckets.iter_mut().zip(grown) {
                if slot.0 == le {
                    slot.1 += more;
                }
            }
        }
    }

    fn golden(&self, seconds: f64) -> Golden {
        Golden {
            requests: self.requests,
            responses: self.responses,
            ok: self.ok,
            rps: if seconds > 0.0 { self.requests / seconds } else { 0.0 },
            success_rate: (self.responses > 0.0).then(|| self.ok / self.responses),
            p50: histogram_quantile(0.5, &self.buckets),
            p95: histogram_quantile(0.95, &self.buckets),
            p99: histogram_quantile(0.99, &self.buckets),
        }
    }
}

/// The golden metrics between scrapes `before` and `after`. A service's are
/// what its replicas' sidecars received; an edge's what the caller's
/// sidecars sent to the callee.
pub fn compute(before: &Snapshot, after: &Snapshot) -> Stat {
    let seconds = after.at.saturating_duration_since(before.at).as_secs_f64();
    let mut services: BTreeMap<&str, Sum> = BTreeMap::new();
    let mut edges: BTreeMap<(&str, &str), (Sum, [f64; 3])> = BTreeMap::new();
    for (label, now) in &after.sidecars {
        let then = before.sidecars.get(label);
        for (key, counts) in &now.calls {
            let old = then.and_then(|t| t.calls.get(key));
            if key.inbound {
                services.entry(&now.service).or_default().add(old, counts);
            } else {
                edges.entry((&now.service, &key.peer)).or_default().0.add(old, counts);
            }
        }
        for (which, (map_now, map_then)) in [
            (&now.retries, then.map(|t| &t.retries)),
            (&now.refused, then.map(|t| &t.refused)),
            (&now.ejections, then.map(|t| &t.ejections)),
        ]
        .into_iter()
        .enumerate()
        {
            for (dest, &value) in map_now {
                let old = map_then.and_then(|m| m.get(dest)).copied().unwrap_or(0.0);
                let grown = increase(old, value);
                // Series the sidecar registered ahead make no edge of their own.
                if grown > 0.0 || edges.contains_key(&(now.service.as_str(), dest.as_str())) {
                    edges.entry((&now.service, dest)).or_default().1[which] += grown;
                }
            }
        }
    }
    Stat {
        window_seconds: seconds,
        services: services
            .into_iter()
            .map(|(name, sum)| ServiceStat {
                name: name.to_string(),
                golden: sum.golden(seconds),
            })
            .collect(),
        edges: edges
            .into_iter()
            .map(|((from, to), (sum, [retries, retries_refused, ejections]))| EdgeStat {
                from: from.to_string(),
                to: to.to_string(),
                golden: sum.golden(seconds),
                retries,
                retries_refused,
                ejections,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        assert_eq!(increase(10.0, 25.0), 15.0);
        assert_eq!(increase(25.0, 4.0), 4.0);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        // 100 calls: 10 under 1 ms, 60 more under 5 ms, 25 under 10 ms, 5 slower.
        let buckets = [(0.001, 10.0), (0.005, 70.0), (0.01, 95.0), (INF, 100.0)];
        // rank 50: in (0.001, 0.005], 40 of its 60 → 0.001 + 0.004 * 40/60.
        assert!(close(histogram_quantile(0.5, &buckets), 0.001 + 0.004 * 40.0 / 60.0));
        // rank 95 is the top of (0.005, 0.01].
        assert!(close(histogram_quantile(0.95, &buckets), 0.01));
        // rank 99 falls in +Inf: the highest finite bound.
        assert!(close(histogram_quantile(0.99, &buckets), 0.01));
        // rank 5 in the first bucket, from zero: 0.001 * 5/10.
        assert!(close(histogram_quantile(0.05, &buckets), 0.0005));
        assert_eq!(histogram_quantile(0.5, &[(0.001, 0.0), (INF, 0.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[]), None);
    }

    #[test]
    fn an_empty_bucket_at_the_rank_answers_its_upper_bound() {
        // rank 5 is reached at 0.001 exactly; the next bucket adds nothing.
        let buckets = [(0.001, 5.0), (0.005, 5.0), (INF, 10.0)];
        assert!(close(histogram_quantile(0.5, &buckets), 0.001));
    }

    #[test]
    fn services_and_edges_come_from_inbound_and_outbound_series() {
        use super::super::scrape::{CallKey, SidecarCounters};
        use std::time::Duration;
        use tokio::time::Instant;
        let t0 = Instant::now();
        let counts = |requests: f64, ok: f64, buckets: Vec<(f64, f64)>| CallCounts {
            requests,
            responses: requests,
            ok,
            buckets,
        };
        let sidecar = |service: &str, inbound: CallCounts, out_to_users: CallCounts, retries: f64| {
            let mut s = SidecarCounters {
                service: service.into(),
                ..Default::default()
            };
            s.calls.insert(
                CallKey {
                    inbound: true,
                    peer: "demo".into(),
                },
                inbound,
            );
            s.calls.insert(
                CallKey {
                    inbound: false,
                    peer: "users".into(),
                },
                out_to_users,
            );
            s.retries.insert("users".into(), retries);
            s
        };
        let mut before = Snapshot {
            at: t0,
            sidecars: Default::default(),
        };
        before.sidecars.insert(
            "cart-proxy".into(),
            sidecar(
                "cart",
                counts(100.0, 100.0, vec![(0.01, 100.0), (INF, 100.0)]),
                counts(50.0, 50.0, vec![(0.01, 50.0), (INF, 50.0)]),
                2.0,
            ),
        );
        let mut after = Snapshot {
            at: t0 + Duration::from_secs(10),
            sidecars: Default::default(),
        };
        // 40 more calls in 10 s, 38 of them OK, 20 of them slower than 10 ms.
        after.sidecars.insert(
            "cart-proxy".into(),
            sidecar(
                "cart",
                counts(140.0, 138.0, vec![(0.01, 120.0), (INF, 140.0)]),
                counts(60.0, 55.0, vec![(0.01, 60.0), (INF, 60.0)]),
                5.0,
            ),
        );
        // A second replica started inside the window: all of its counts are new.
        after.sidecars.insert(
            "cart-1-proxy".into(),
            sidecar(
                "cart",
                counts(10.0, 10.0, vec![(0.01, 10.0), (INF, 10.0)]),
                counts(0.0, 0.0, vec![(0.01, 0.0), (INF, 0.0)]),
                0.0,
            ),
        );
        let stat = compute(&before, &after);
        assert_eq!(stat.window_seconds, 10.0);
        let cart = &stat.services[0];
        assert_eq!(cart.name, "cart");
        assert_eq!(cart.golden.requests, 50.0);
        assert!(close(Some(cart.golden.rps), 5.0));
        assert!(close(cart.golden.success_rate, 48.0 / 50.0));
        // 30 of 50 under 10 ms: rank 25 → 0.01 * 25/30.
        assert!(close(cart.golden.p50, 0.01 * 25.0 / 30.0));
        let edge = &stat.edges[0];
        assert_eq!((edge.from.as_str(), edge.to.as_str()), ("cart", "users"));
        assert_eq!(edge.golden.requests, 10.0);
        assert!(close(edge.golden.success_rate, 0.5));
        assert_eq!(edge.retries, 3.0);
    }
}
