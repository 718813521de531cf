//! Traffic policy in mesh.toml: deadlines, retries, per-method overrides,
//! fault injection and telemetry switches. Read by the outbound sidecar of
//! every caller of a service (the client side enforces it, as in Istio and
//! Linkerd), so one file governs the whole mesh.

use std::{fmt, time::Duration};

use serde::Deserialize;

/// A gRPC status code by its canonical name, e.g. `"UNAVAILABLE"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The numeric code as sent in `grpc-status`.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Overrides for one method of a service (key `Method` or `pkg.Service/Method`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodPolicy {
    /// Whether a failed call may be sent again; overrides the contract's
    /// `idempotency_level` (NO_SIDE_EFFECTS and IDEMPOTENT count as true).
    pub idempotent: Option<bool>,
    /// Deadline cap for this method; overrides the service's `timeout`.
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
}

/// Fault injection for calls to a service, as Istio does it: abort some
/// share of calls with a status, and/or delay some share of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Methods this applies to (`Method` or `pkg.Service/Method`); all when empty.
    #[serde(default)]
    pub methods: Vec<String>,
    pub abort: Option<Abort>,
    pub delay: Option<Delay>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// Share of calls aborted, 0 to 100.
    pub percent: f64,
    /// The status they get.
    pub status: GrpcCode,
    /// `false` (default): the call never reaches the service. `true`: the
    /// service handles it and its answer is replaced by the status, the way
    /// a response lost on the network looks to the caller.
    #[serde(default)]
    pub after_response: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    /// Share of calls delayed, 0 to 100.
    pub percent: f64,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// Mesh-wide retry limits (`[retry]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Retries may add at most this share of the live request rate per destination.
    pub budget_ratio: f64,
    /// …plus this many retries per second, so a quiet service can still retry.
    pub min_retries_per_second: u32,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Request bodies up to this size are kept for replay; larger or still
    /// streaming requests are sent once.
    pub max_replay_bytes: usize,
    /// First backoff; each retry doubles it up to `backoff_max`, with jitter.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget_ratio: 0.2,
            min_retries_per_second: 10,
            max_attempts: 3,
            max_replay_bytes: 64 * 1024,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }
}

/// Telemetry switches (`[telemetry]`). Where spans go is the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` environment variable, not this file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// One JSON line per call on each sidecar's standard output, with its trace id.
    pub access_log: bool,
}

/// Whether `pattern` (`Method` or `pkg.Service/Method`) names this call.
pub fn method_matches(pattern: &str, grpc_service: &str, method: &str) -> bool {
    match pattern.split_once('/') {
        Some((service, name)) => service == grpc_service && name == method,
        None => pattern == method,
    }
}
