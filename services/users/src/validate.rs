//! Checks and normalisation of what callers send: emails, passwords, display names,
//! locales and currencies. Each error names the field.

use crate::Error;

/// Longest password accepted; hashing cost must not be the caller's to choose.
const MAX_PASSWORD_BYTES: usize = 1024;
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// Trims and lower-cases an email after checking its shape (`local@domain.tld`).
/// Lower-casing the local part is not strictly RFC 5321, but it is what users expect:
/// `Ann@x.org` and `ann@x.org` are one account.
pub fn email(raw: &str) -> Result<String, Error> {
    let email = raw.trim().to_lowercase();
    let bad = |why: &str| {
        Err(Error::invalid(
            "email",
            format!("'{}' is not a valid email address: {why}", raw.trim()),
        ))
    };
    if email.is_empty() {
        return Err(Error::invalid("email", "is required"));
    }
    if email.len() > 254 {
        return bad("longer than 254 characters");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return bad("no '@'");
    };
    if local.is_empty() || local.len() > 64 {
        return bad("the part before '@' must be 1 to 64 characters");
    }
    if domain.contains('@') {
        return bad("more than one '@'");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        return bad("the domain must look like example.com");
    }
    Ok(email)
}

pub fn password(password: &str) -> Result<(), Error> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters, got {chars}"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(
            "password",
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Trims the display name; empty is allowed.
pub fn display_name(raw: &str) -> Result<String, Error> {
    let name = raw.trim();
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(Error::invalid(
            "display_name",
            format!("must be at most {MAX_DISPLAY_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("display_name", "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// Checks a BCP 47-shaped language tag (`en`, `en-US`, `zh-Hant-TW`, `de-CH-1996`) and
/// returns it in canonical case: language lower, script title, region upper.
/// Whether the subtags are registered is not checked.
pub fn locale(raw: &str) -> Result<String, Error> {
    let bad = || {
        Error::invalid(
            "preferences.locale",
            format!("'{raw}' is not a BCP 47 language tag such as en-US"),
        )
    };
    if raw.is_empty() || raw.len() > 35 {
        return Err(bad());
    }
    let mut out = Vec::new();
    for (i, sub) in raw.split(['-', '_']).enumerate() {
        let alpha = sub.bytes().all(|b| b.is_ascii_alphabetic());
        let alnum = sub.bytes().all(|b| b.is_ascii_alphanumeric());
        let canonical = match (i, sub.len()) {
            (0, 2..=3 | 5..=8) if alpha => sub.to_ascii_lowercase(),
            (0, _) => return Err(bad()),
            (_, 4) if alpha => {
                let lower = sub.to_ascii_lowercase();
                lower[..1].to_ascii_uppercase() + &lower[1..]
            }
            (_, 2) if alpha => sub.to_ascii_uppercase(),
            (_, 1..=8) if alnum => sub.to_ascii_lowercase(),
            _ => return Err(bad()),
        };
        out.push(canonical);
    }
    Ok(out.join("-"))
}

pub fn currency(code: &str) -> Result<(), Error> {
    if meshwork_service_kit::is_currency_code(code) {
        Ok(())
    } else {
        Err(Error::invalid(
            "preferences.currency",
            format!("'{code}' is not an ISO 4217 code (three uppercase letters such as USD)"),
        ))
    }
}

/// A user id must be present; whether it exists is the store's question.
pub fn user_id(id: &str) -> Result<(), Error> {
    if id.trim().is_empty() {
        Err(Error::invalid("user_id", "is required"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email("  Ann.Lee@Example.COM ").unwrap(), "ann.lee@example.com");
        assert!(email("a+tag@sub.example.org").is_ok());
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a@b@c.com",
            "a b@c.com",
            "a@-b.com",
            "a@b..com",
        ] {
            let err = email(bad).unwrap_err();
            assert!(err.to_string().starts_with("email "), "{bad}: {err}");
        }
    }

    #[test]
    fn passwords() {
        assert!(password("12345678").is_ok());
        assert!(password("ünïcödé!").is_ok(), "counted in characters");
        assert!(password("1234567").unwrap_err().to_string().contains("at least 8"));
        assert!(password(&"x".repeat(2000)).is_err());
    }

    #[test]
    fn locales() {
        assert_eq!(locale("en-US").unwrap(), "en-US");
        assert_eq!(locale("en_gb").unwrap(), "en-GB");
        assert_eq!(locale("ZH-hant-tw").unwrap(), "zh-Hant-TW");
        assert_eq!(locale("de-CH-1996").unwrap(), "de-CH-1996");
        assert_eq!(locale("es-419").unwrap(), "es-419");
        assert_eq!(locale("fr").unwrap(), "fr");
        for bad in [
            "",
            "e",
            "englishes-US",
            "en-",
            "en--US",
            "12-US",
            "en-US-toolongsubtag",
            "en US",
        ] {
            let err = locale(bad).unwrap_err();
            assert!(err.to_string().starts_with("preferences.locale "), "{bad}: {err}");
        }
    }

    #[test]
    fn currencies() {
        assert!(currency("EUR").is_ok());
        assert!(
            currency("eur")
                .unwrap_err()
                .to_string()
                .starts_with("preferences.currency ")
        );
    }
}
