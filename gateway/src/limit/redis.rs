//! Counters in Redis, shared by the gateway's replicas. The GCRA decision
//! for every rule of a call is made in one Lua script, atomically and on
//! Redis's clock, so N replicas together allow what one would and their
//! clocks need not agree. The connection manager reconnects by itself;
//! while Redis cannot be reached each call is counted as a store error,
//! the outage is logged once (and its end once), and the caller follows
//! the file's `on_error`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{Client, Script, aio::ConnectionManager, aio::ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{LimitMetrics, Rule, Verdict};

/// KEYS: one counter per rule. ARGV: per rule, its emission interval and
/// its burst tolerance (interval × burst), in microseconds. Each key holds
/// its theoretical arrival time (TAT), in microseconds of Redis's clock.
/// Returns, per rule: allowed (0/1), calls left, µs until one call would
/// pass, µs until the burst is whole again. As with governor, a rule that
/// lets a call pass counts it even when another rule refuses.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - now > tolerance then
    table.insert(out, 0)
    table.insert(out, 0)
    table.insert(out, new_tat - tolerance - now)
    table.insert(out, tat - now)
  else
    redis.call('SET', key, string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
    table.insert(out, 1)
    table.insert(out, math.floor((tolerance - (new_tat - now)) / interval))
    table.insert(out, 0)
    table.insert(out, new_tat - now)
  end
end
return out
"#;

/// How long a call waits for Redis before it counts as an error: the
/// limiter sits on every call, so it must not add more than a blip.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const PREFIX: &str = "meshwork:rl:";

pub struct RedisStore {
    connection: Arc<OnceCell<ConnectionManager>>,
    script: Script,
    down: Arc<AtomicBool>,
    metrics: LimitMetrics,
    url: Arc<str>,
}

impl RedisStore {
    /// Starts connecting in the background: a gateway may start before its
    /// Redis, and calls meanwhile follow `on_error`.
    pub fn connect(url: &str, metrics: LimitMetrics) -> Result<Self, redis::RedisError> {
        let client = Client::open(url)?;
        let connection = Arc::new(OnceCell::new());
        let down = Arc::new(AtomicBool::new(false));
        let url: Arc<str> = redact(url).into();
        tokio::spawn({
            let (connection, down, url) = (connection.clone(), down.clone(), url.clone());
            async move {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_number_of_retries(2)
                    .set_max_delay(1000);
                loop {
                    match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                        Ok(manager) => {
                            let _ = connection.set(manager);
                            if down.swap(false, Ordering::Relaxed) {
                                tracing::warn!(redis = %url, "gateway: rate limit store reachable again");
                            } else {
                                tracing::info!(redis = %url, "gateway: rate limit store connected");
                            }
                            break;
                        }
                        Err(error) => {
                            if !down.swap(true, Ordering::Relaxed) {
                                tracing::error!(redis = %url, %error, "gateway: rate limit store unreachable; retrying");
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        });
        Ok(RedisStore {
            connection,
            script: Script::new(GCRA),
            down,
            metrics,
            url,
        })
    }

    /// One round trip for every rule of a call; `None` when Redis did not answer.
    pub async fn check(&self, asks: &[(&str, &Rule, &str)]) -> Option<Vec<Verdict>> {
        let Some(manager) = self.connection.get() else {
            self.metrics.store_errors.inc();
            return None;
        };
        let mut connection = manager.clone();
        let mut invocation = self.script.prepare_invoke();
        for (name, rule, key) in asks {
            let interval = rule.interval.as_micros() as u64;
            invocation
                .key(format!("{PREFIX}{name}:{key}"))
                .arg(interval)
                .arg(interval.saturating_mul(u64::from(rule.burst)));
        }
        match invocation.invoke_async::<Vec<i64>>(&mut connection).await {
            Ok(values) if values.len() == asks.len() * 4 => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::warn!(redis = %self.url, "gateway: rate limit store reachable again");
                }
                let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
                Some(
                    values
                        .chunks_exact(4)
                        .map(|v| Verdict {
                            allowed: v[0] == 1,
                            remaining: v[1].clamp(0, i64::from(u32::MAX)) as u32,
                            retry_after: micros(v[2]),
                            reset: micros(v[3]),
                        })
                        .collect(),
                )
            }
            Ok(values) => {
                self.failed(&format!(
                    "the script answered {} values for {} rules",
                    values.len(),
                    asks.len()
                ));
                None
            }
            Err(error) => {
                self.failed(&error.to_string());
                None
            }
        }
    }

    fn failed(&self, error: &str) {
        self.metrics.store_errors.inc();
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(redis = %self.url, %error, "gateway: rate limit store unreachable; following on_error until it answers");
        }
    }
}

/// The URL without a password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}
