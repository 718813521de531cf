//! HTTP/2 keep-alive, for the connections we accept and those we make: a
//! PING every interval, idle or not, so a peer that died without closing
//! is found and its connection dropped.

use std::time::Duration;

use h2::{Ping, PingPong};

/// How long a keep-alive PING may go unanswered before the connection is
/// taken for dead.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Pings every `interval`; resolves, saying why, once a PING fails or goes
/// unanswered. Never resolves without a ping handle (h2 hands it out once
/// per connection).
pub async fn dead_peer(ping_pong: Option<PingPong>, interval: Duration) -> String {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match tokio::time::timeout(TIMEOUT, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(error)) => return format!("keep-alive PING failed: {error}"),
            Err(_) => return format!("no answer to a keep-alive PING within {TIMEOUT:?}"),
        }
    }
}
