//! The IETF draft's header fields (draft-ietf-httpapi-ratelimit-headers,
//! the structured-field form of draft 10 and later), written by hand: they
//! are two short Structured Field lists of a string and integers, which no
//! crate in the workspace writes.
//!
//! `RateLimit-Policy: "name";q=10;w=1` says a policy's quota (`q` calls per
//! `w` seconds, as configured); `RateLimit: "name";r=3;t=1` says what is
//! left now (`r` calls) and in how many seconds the quota is whole again
//! (`t`). Every rule that applied to the call is listed.

use std::{fmt::Write, time::Duration};

use http::{HeaderName, HeaderValue};

use super::{Rule, Verdict};

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

pub fn policy(rules: &[&Rule]) -> Option<HeaderValue> {
    if let [rule] = rules
        && let Some(made) = &rule.policy
    {
        return Some(made.clone());
    }
    let mut text = String::new();
    for rule in rules {
        if !text.is_empty() {
            text.push_str(", ");
        }
        let _ = write!(text, "\"{}\";q={};w={}", rule.name, rule.count, seconds(rule.window));
    }
    HeaderValue::try_from(text).ok()
}

pub fn state(rules: &[&Rule], verdicts: &[Verdict]) -> Option<HeaderValue> {
    let mut text = String::new();
    for (rule, verdict) in rules.iter().zip(verdicts) {
        if !text.is_empty() {
            text.push_str(", ");
        }
        let _ = write!(
            text,
            "\"{}\";r={};t={}",
            rule.name,
            verdict.remaining,
            seconds(verdict.reset)
        );
    }
    HeaderValue::try_from(text).ok()
}

/// Whole seconds, rounded up (the fields take integers).
fn seconds(duration: Duration) -> u64 {
    duration.as_micros().div_ceil(1_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, count: u32, window: u64) -> Rule {
        Rule {
            name: name.into(),
            methods: Vec::new(),
            key: meshwork_config::RateKey::Global,
            header: HeaderName::from_static("x-api-key"),
            count,
            window: Duration::from_secs(window),
            burst: count,
            interval: Duration::from_secs(window) / count,
            policy: None,
        }
    }

    #[test]
    fn fields_in_the_drafts_structured_syntax() {
        let (a, b) = (rule("per-user", 10, 1), rule("daily", 1000, 86400));
        let verdicts = [
            Verdict {
                allowed: true,
                remaining: 3,
                reset: Duration::from_millis(700),
                retry_after: Duration::ZERO,
            },
            Verdict {
                allowed: true,
                remaining: 999,
                reset: Duration::from_secs(86),
                retry_after: Duration::ZERO,
            },
        ];
        assert_eq!(
            policy(&[&a, &b]).expect("a value"),
            "\"per-user\";q=10;w=1, \"daily\";q=1000;w=86400"
        );
        assert_eq!(
            state(&[&a, &b], &verdicts).expect("a value"),
            "\"per-user\";r=3;t=1, \"daily\";r=999;t=86"
        );
    }
}
