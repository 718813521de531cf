//! What an operator may tune in the cart, from `MESH_CART_*` environment
//! variables (mesh.toml's `env` sets them per service, as for users).

use std::time::Duration;

use anyhow::{Context, bail};

/// How long one checkout may run before it stops where it is (`10s`).
pub const CHECKOUT_LIMIT_ENV: &str = "MESH_CART_CHECKOUT_LIMIT";

/// The default [`CHECKOUT_LIMIT_ENV`].
pub const CHECKOUT_LIMIT: Duration = Duration::from_secs(10);
/// How long the catalog holds a checkout's units; the recovery must come first.
pub const HOLD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// A checkout still running after this is stopped (and left to the recovery).
    pub checkout_limit: Duration,
    /// How long the catalog holds the units of a checkout.
    pub hold: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            checkout_limit: CHECKOUT_LIMIT,
            hold: HOLD,
        }
    }
}

impl Settings {
    /// From the process environment; an unusable value is refused, naming the variable.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut settings = Settings::default();
        if let Some(value) = get(CHECKOUT_LIMIT_ENV) {
            let limit = humantime::parse_duration(value.trim())
                .with_context(|| format!("{CHECKOUT_LIMIT_ENV} = '{value}' is not a duration like 10s"))?;
            if limit < Duration::from_secs(1) {
                bail!("{CHECKOUT_LIMIT_ENV} = '{value}' is too short; at least 1s");
            }
            settings.checkout_limit = limit;
        }
        // The recovery looks at a checkout once it is `stale_after` old and
        // then every `sweep_every`; it must get there while the units are held.
        if settings.stale_after() + settings.sweep_every() >= settings.hold {
            bail!(
                "{CHECKOUT_LIMIT_ENV} = '{:?}' is too long; it must be under {:?}, so that a checkout left \
                 open is finished within the catalog's {:?} hold",
                settings.checkout_limit,
                settings.hold.mul_f64(0.4),
                settings.hold
            );
        }
        Ok(settings)
    }

    /// How long a checkout is left untouched before the recovery takes it: twice
    /// the limit, so a running checkout (bounded by the limit) has surely stopped.
    pub fn stale_after(&self) -> Duration {
        self.checkout_limit * 2
    }

    /// How often the recovery looks for stale checkouts.
    pub fn sweep_every(&self) -> Duration {
        self.checkout_limit / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(value: &str) -> anyhow::Result<Settings> {
        Settings::from_lookup(|name| (name == CHECKOUT_LIMIT_ENV).then(|| value.to_owned()))
    }

    #[test]
    fn the_limit_is_read_and_bounded_by_the_hold() {
        assert_eq!(Settings::from_lookup(|_| None).unwrap(), Settings::default());
        let s = from("2s").unwrap();
        assert_eq!(
            (s.stale_after(), s.sweep_every()),
            (Duration::from_secs(4), Duration::from_secs(1))
        );
        let e = format!("{:#}", from("30s").unwrap_err());
        assert!(
            e.starts_with("MESH_CART_CHECKOUT_LIMIT = '30s' is too long; it must be under 24s"),
            "{e}"
        );
        let e = format!("{:#}", from("soon").unwrap_err());
        assert!(
            e.starts_with("MESH_CART_CHECKOUT_LIMIT = 'soon' is not a duration"),
            "{e}"
        );
        assert!(from("500ms").is_err());
    }
}
