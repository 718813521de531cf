//! Timestamps as the services store them (Unix milliseconds) and send them
//! (`google.protobuf.Timestamp`).

use std::time::{SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A stored millisecond count as a protobuf timestamp.
pub fn timestamp(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        // rem_euclid(1000) is in 0..1000, so the product fits in i32.
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_millis() {
        assert_eq!(
            timestamp(1_500),
            Timestamp {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            timestamp(-1),
            Timestamp {
                seconds: -1,
                nanos: 999_000_000
            }
        );
        assert!(now_millis() > 1_600_000_000_000);
    }
}
