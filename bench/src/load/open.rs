//! The open loop, as wrk2 does it: calls start on a fixed schedule, one every
//! 1/rate seconds, whether or not earlier calls have been answered, and each
//! call's latency counts from when it was *due* to start. A stalled path so
//! shows as the latency every waiting caller would have seen, instead of as
//! fewer samples (coordinated omission).
//!
//! The schedule is kept by a plain thread sleeping to each due time (tokio's
//! timer ticks in whole milliseconds, as long as the gaps at 1,000 calls per
//! second); it hands each call to the runtime as a task.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Caller, Failure, LoadResult, recorder::Recorder};

/// Starts `rate` calls a second for `duration`, made by clones of `callers`
/// taken round-robin, and waits for the last answer.
pub async fn open_loop<C: Caller>(callers: &[C], rate: u32, duration: Duration) -> LoadResult {
    let interval = Duration::from_secs(1) / rate.max(1);
    let total = u32::try_from(duration.as_nanos() / interval.as_nanos().max(1)).unwrap_or(u32::MAX);
    let (done, mut answers) = mpsc::unbounded_channel::<(Duration, Result<(), Failure>)>();
    let runtime = tokio::runtime::Handle::current();
    let callers: Vec<C> = callers.to_vec();
    let pacer = std::thread::Builder::new().name("bench-pacer".into()).spawn(move || {
        let start = Instant::now();
        for i in 0..total {
            if done.is_closed() {
                break; // the step was abandoned (interrupted)
            }
            let due = start + interval * i;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let mut caller = callers[i as usize % callers.len()].clone();
            let done = done.clone();
            runtime.spawn(async move {
                let outcome = caller.call().await;
                // Measured from the due time, not from when the call went out.
                let _ = done.send((due.elapsed(), outcome));
            });
        }
        // `done` drops here: the answers channel closes after the last call.
    });
    let mut recorder = Recorder::new();
    if pacer.is_err() {
        recorder.record(
            Duration::ZERO,
            Err(Failure::new("ResourceExhausted", "the pacing thread could not start")),
        );
        return recorder.finish(duration);
    }
    while let Some((latency, outcome)) = answers.recv().await {
        recorder.record(latency, outcome);
    }
    recorder.finish(duration)
}
