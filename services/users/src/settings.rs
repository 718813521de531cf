//! What an operator may tune in the users service, from `MESH_USERS_*`
//! environment variables (every shop service takes the same command-line
//! arguments, so service-specific settings come from the environment, which
//! mesh.toml's `env` sets per service).

use std::time::Duration;

use anyhow::{Context, bail};

use crate::validate;

/// The `aud` claim of every token.
pub const AUDIENCE_ENV: &str = "MESH_USERS_AUDIENCE";
/// How long a token is valid (`1h`, `15m`).
pub const TOKEN_TTL_ENV: &str = "MESH_USERS_TOKEN_TTL";
/// Make a new signing key this often while running (`24h`; absent: never).
pub const KEY_ROTATION_ENV: &str = "MESH_USERS_KEY_ROTATION";
/// Comma-separated emails whose accounts get the role "admin" when they register.
pub const ADMIN_EMAILS_ENV: &str = "MESH_USERS_ADMIN_EMAILS";

/// The role [`ADMIN_EMAILS_ENV`] grants.
pub const ADMIN_ROLE: &str = "admin";
/// The `iss` claim of every token.
pub const TOKEN_ISSUER: &str = "meshwork-users";
/// The default `aud`, what the gateway expects by default.
pub const DEFAULT_AUDIENCE: &str = "meshwork";
/// How long a token is valid unless [`TOKEN_TTL_ENV`] says otherwise.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The shortest rotation interval accepted: each rotation writes a row.
const MIN_ROTATION: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub audience: String,
    pub token_ttl: Duration,
    pub key_rotation: Option<Duration>,
    /// Normalised (trimmed, lower-case) like the emails of accounts.
    pub admin_emails: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            audience: DEFAULT_AUDIENCE.into(),
            token_ttl: TOKEN_TTL,
            key_rotation: None,
            admin_emails: Vec::new(),
        }
    }
}

impl Settings {
    /// From the process environment; an unusable value is refused, naming the variable.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any lookup of variable names (the environment, or a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut settings = Settings::default();
        if let Some(audience) = get(AUDIENCE_ENV) {
            if audience.trim().is_empty() {
                bail!("{AUDIENCE_ENV} is empty; unset it for the default '{DEFAULT_AUDIENCE}'");
            }
            settings.audience = audience.trim().into();
        }
        if let Some(ttl) = get(TOKEN_TTL_ENV) {
            let ttl = duration(TOKEN_TTL_ENV, &ttl)?;
            if ttl.is_zero() {
                bail!("{TOKEN_TTL_ENV} must be more than 0s");
            }
            settings.token_ttl = ttl;
        }
        if let Some(every) = get(KEY_ROTATION_ENV) {
            let every = duration(KEY_ROTATION_ENV, &every)?;
            if every < MIN_ROTATION {
                bail!("{KEY_ROTATION_ENV} = '{every:?}' is too short; at least {MIN_ROTATION:?}");
            }
            settings.key_rotation = Some(every);
        }
        if let Some(emails) = get(ADMIN_EMAILS_ENV) {
            for raw in emails.split(',').filter(|e| !e.trim().is_empty()) {
                let email = validate::email(raw).context(ADMIN_EMAILS_ENV)?;
                settings.admin_emails.push(email);
            }
        }
        Ok(settings)
    }

    /// The roles an account registering with (normalised) `email` gets.
    pub fn roles_for(&self, email: &str) -> Vec<String> {
        if self.admin_emails.iter().any(|e| e == email) {
            vec![ADMIN_ROLE.into()]
        } else {
            Vec::new()
        }
    }
}

fn duration(name: &str, value: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(value.trim())
        .with_context(|| format!("{name} = '{value}' is not a duration like 30s, 15m or 24h"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(from(&[]).unwrap(), Settings::default());
        let s = from(&[
            (AUDIENCE_ENV, "shop"),
            (TOKEN_TTL_ENV, "15m"),
            (KEY_ROTATION_ENV, "2s"),
            (ADMIN_EMAILS_ENV, " Boss@Example.com ,ops@example.com,"),
        ])
        .unwrap();
        assert_eq!(s.audience, "shop");
        assert_eq!(s.token_ttl, Duration::from_secs(900));
        assert_eq!(s.key_rotation, Some(Duration::from_secs(2)));
        assert_eq!(s.roles_for("boss@example.com"), ["admin"]);
        assert_eq!(s.roles_for("ops@example.com"), ["admin"]);
        assert!(s.roles_for("ann@example.com").is_empty());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = format!("{:#}", from(&[(KEY_ROTATION_ENV, "soon")]).unwrap_err());
        assert!(
            e.starts_with("MESH_USERS_KEY_ROTATION = 'soon' is not a duration"),
            "{e}"
        );
        let e = format!("{:#}", from(&[(KEY_ROTATION_ENV, "10ms")]).unwrap_err());
        assert!(e.contains("too short"), "{e}");
        let e = format!("{:#}", from(&[(ADMIN_EMAILS_ENV, "boss")]).unwrap_err());
        assert!(
            e.starts_with("MESH_USERS_ADMIN_EMAILS: email 'boss' is not a valid email"),
            "{e}"
        );
        assert!(from(&[(TOKEN_TTL_ENV, "0s")]).is_err());
        assert!(from(&[(AUDIENCE_ENV, " ")]).is_err());
    }
}
