//! The closed loop: `concurrency` callers, each starting its next call as
//! soon as the previous one is answered, until the step's time is up. It
//! finds the throughput a path sustains; its latencies are those of a
//! saturated path.

use std::time::Duration;

use tokio::{task::JoinSet, time::Instant};

use super::{Caller, Failure, LoadResult, recorder::Recorder};

/// Runs the loop for `duration`; callers are clones of `callers` taken
/// round-robin (one connection each), so each connection carries many calls.
pub async fn closed_loop<C: Caller>(callers: &[C], concurrency: usize, duration: Duration) -> LoadResult {
    let started = Instant::now();
    let deadline = started + duration;
    let mut running = JoinSet::new();
    for (i, caller) in callers.iter().cycle().take(concurrency).enumerate() {
        let mut caller = caller.clone();
        // Spread the first calls a little so callers do not march in step.
        let stagger = Duration::from_micros((i % 64) as u64 * 10);
        running.spawn(async move {
            tokio::time::sleep(stagger).await;
            let mut recorder = Recorder::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = caller.call().await;
                recorder.record(sent.elapsed(), outcome);
            }
            recorder
        });
    }
    let mut total = Recorder::new();
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(recorder) => total.merge(recorder),
            // A caller cannot panic short of a bug; count it, do not hide it.
            Err(error) => total.record(
                Duration::ZERO,
                Err(Failure::new("Internal", format!("a caller failed: {error}"))),
            ),
        }
    }
    total.finish(started.elapsed())
}
