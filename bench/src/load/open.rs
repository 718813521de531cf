//! The open loop, as wrk2 does it: calls start on a fixed schedule, one every
//! 1/rate seconds, whether or not earlier calls have been answered, and each
//! call's latency counts from when it was *due* to start. A stalled path so
//! shows as the latency every waiting caller would have seen, instead of as
//! fewer samples (coordinated omission).
//!
//! The schedule is kept by a plain thread sleeping to each due time (tokio's
//! timer ticks in whole milliseconds, as long as the gaps at 1,000 calls per
//! second); it hands each call to the runtime as a task.
//!
//! The paired loop takes turns between two paths, a slice of the schedule
//! each, so that both meet the same moments of the machine: on a virtual
//! machine whose host takes CPU time in bursts, two steps run one after the
//! other can differ by more than the proxy under test adds.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Caller, Failure, LoadResult, recorder::Recorder};

/// Starts `rate` calls a second for `duration`, made by clones of `callers`
/// taken round-robin, and waits for the last answer.
pub async fn open_loop<C: Caller>(callers: &[C], rate: u32, duration: Duration) -> LoadResult {
    let [result] = paced([callers], rate, duration, duration).await;
    result
}

/// The open loop at `rate` for `duration`, its schedule cut into slices of
/// `slice` that go to `path` and to `direct` in turn: each gets half of the
/// calls, at the full rate while its slice lasts. Returns both results.
pub async fn open_loop_paired<C: Caller>(
    path: &[C],
    direct: &[C],
    rate: u32,
    duration: Duration,
    slice: Duration,
) -> [LoadResult; 2] {
    paced([path, direct], rate, duration, slice).await
}

/// The schedule: call `i` is due at `i / rate` and goes to the set whose turn
/// it is (slices of `slice`, in order). Each set's figures cover its share of
/// `duration`.
async fn paced<C: Caller, const N: usize>(
    sets: [&[C]; N],
    rate: u32,
    duration: Duration,
    slice: Duration,
) -> [LoadResult; N] {
    let interval = Duration::from_secs(1) / rate.max(1);
    let total = u32::try_from(duration.as_nanos() / interval.as_nanos().max(1)).unwrap_or(u32::MAX);
    let slice_ns = slice.as_nanos().max(1);
    let (done, mut answers) = mpsc::unbounded_channel::<(usize, Duration, Result<(), Failure>)>();
    let runtime = tokio::runtime::Handle::current();
    let sets: [Vec<C>; N] = sets.map(|set| set.to_vec());
    let pacer = std::thread::Builder::new().name("bench-pacer".into()).spawn(move || {
        let start = Instant::now();
        for i in 0..total {
            if done.is_closed() {
                break; // the step was abandoned (interrupted)
            }
            let offset = interval * i;
            let due = start + offset;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let set = (offset.as_nanos() / slice_ns) as usize % N;
            let callers = &sets[set];
            let mut caller = callers[i as usize % callers.len()].clone();
            let done = done.clone();
            runtime.spawn(async move {
                let outcome = caller.call().await;
                // Measured from the due time, not from when the call went out.
                let _ = done.send((set, due.elapsed(), outcome));
            });
        }
        // `done` drops here: the answers channel closes after the last call.
    });
    let mut recorders: [Recorder; N] = std::array::from_fn(|_| Recorder::new());
    if pacer.is_err() {
        for recorder in &mut recorders {
            recorder.record(
                Duration::ZERO,
                Err(Failure::new("ResourceExhausted", "the pacing thread could not start")),
            );
        }
    } else {
        while let Some((set, latency, outcome)) = answers.recv().await {
            recorders[set].record(latency, outcome);
        }
    }
    let share = duration / N as u32;
    recorders.map(|recorder| recorder.finish(share))
}
