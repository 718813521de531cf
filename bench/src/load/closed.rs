//! The closed loop: `concurrency` callers, each starting its next call as
//! soon as the previous one is answered, until the step's time is up. It
//! finds the throughput a path sustains; its latencies are those of a
//! saturated path.

use std::time::Duration;

use tokio::{task::JoinSet, time::Instant};

use super::{
    Client, LoadResult,
    client::{call, request},
    recorder::Recorder,
};
use crate::plan::CallKind;

/// Runs the loop for `duration`; callers are spread round-robin over `clients`
/// (one HTTP/2 connection each), so each connection carries many streams.
pub async fn closed_loop(
    clients: &[Client],
    kind: CallKind,
    payload: usize,
    concurrency: usize,
    duration: Duration,
    call_deadline: Option<Duration>,
) -> LoadResult {
    let started = Instant::now();
    let deadline = started + duration;
    let mut callers = JoinSet::new();
    for (i, client) in clients.iter().cycle().take(concurrency).enumerate() {
        let mut client = client.clone();
        let request = request(kind, payload);
        // Spread the first calls a little so callers do not march in step.
        let stagger = Duration::from_micros((i % 64) as u64 * 10);
        callers.spawn(async move {
            tokio::time::sleep(stagger).await;
            let mut recorder = Recorder::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = call(&mut client, kind, request.clone(), call_deadline).await;
                recorder.record(sent.elapsed(), outcome);
            }
            recorder
        });
    }
    let mut total = Recorder::new();
    while let Some(joined) = callers.join_next().await {
        match joined {
            Ok(recorder) => total.merge(recorder),
            // A caller cannot panic short of a bug; count it, do not hide it.
            Err(error) => total.record(
                Duration::ZERO,
                Err(tonic::Status::internal(format!("a caller failed: {error}"))),
            ),
        }
    }
    total.finish(started.elapsed())
}
