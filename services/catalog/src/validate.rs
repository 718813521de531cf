//! Checks on catalog requests, and the page-token format.

use crate::Error;

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;
/// Most ids one BatchGetProducts or WatchProducts may name.
pub const MAX_IDS: usize = 100;

/// 0 means the default; above the maximum is capped (as AIP-158 suggests) rather
/// than refused, since a client asking for more can still page.
pub fn page_size(requested: i32) -> Result<usize, Error> {
    match usize::try_from(requested) {
        Err(_) => Err(Error::invalid(
            "page_size",
            format!("must not be negative, got {requested}"),
        )),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// The token for "the page after `last_id`". Opaque to callers (hex, with a version
/// prefix) so that its format can change without breaking them.
pub fn encode_page_token(last_id: &str) -> String {
    hex::encode(format!("v1:{last_id}"))
}

/// The last id seen, or `None` for the first page.
pub fn decode_page_token(token: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid("page_token", "is not a token this service issued");
    let bytes = hex::decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix("v1:").map(|id| Some(id.to_owned())).ok_or_else(bad)
}

pub fn product_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        Err(Error::invalid("product_id", "is required"))
    } else {
        Ok(())
    }
}

/// A non-empty list of at most [`MAX_IDS`] non-empty ids.
pub fn product_ids(ids: &[String]) -> Result<(), Error> {
    if ids.is_empty() {
        return Err(Error::invalid("product_ids", "must name at least one product"));
    }
    if ids.len() > MAX_IDS {
        return Err(Error::invalid(
            "product_ids",
            format!("must hold at most {MAX_IDS} ids, got {}", ids.len()),
        ));
    }
    if ids.iter().any(String::is_empty) {
        return Err(Error::invalid("product_ids", "must not contain an empty id"));
    }
    Ok(())
}

pub fn price(amount_minor: i64, currency: &str) -> Result<(), Error> {
    if amount_minor < 0 {
        return Err(Error::invalid(
            "price.amount_minor",
            format!("must not be negative, got {amount_minor}"),
        ));
    }
    if !meshwork_service_kit::is_currency_code(currency) {
        return Err(Error::invalid(
            "price.currency_code",
            format!("'{currency}' is not an ISO 4217 code (three uppercase letters such as USD)"),
        ));
    }
    Ok(())
}

pub fn stock(stock: i32) -> Result<(), Error> {
    if stock < 0 {
        Err(Error::invalid("stock", format!("must not be negative, got {stock}")))
    } else {
        Ok(())
    }
}

/// Default and longest hold of a stock reservation, in seconds.
pub const DEFAULT_HOLD_SECONDS: i32 = 60;
pub const MAX_HOLD_SECONDS: i32 = 600;

pub fn reservation_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        Err(Error::invalid("reservation_id", "is required"))
    } else {
        Ok(())
    }
}

/// 1 to [`MAX_IDS`] distinct products, each at least one unit.
pub fn stock_items(items: &[(String, i32)]) -> Result<(), Error> {
    if items.is_empty() || items.len() > MAX_IDS {
        return Err(Error::invalid(
            "items",
            format!("must hold 1 to {MAX_IDS} products, got {}", items.len()),
        ));
    }
    for (i, (id, quantity)) in items.iter().enumerate() {
        if id.is_empty() {
            return Err(Error::invalid("items.product_id", "is required"));
        }
        if *quantity < 1 {
            return Err(Error::invalid(
                "items.quantity",
                format!("of '{id}' must be at least 1, got {quantity}"),
            ));
        }
        if items[..i].iter().any(|(other, _)| other == id) {
            return Err(Error::invalid("items", format!("name '{id}' more than once")));
        }
    }
    Ok(())
}

/// The hold in milliseconds; 0 means the default.
pub fn hold_ms(seconds: i32) -> Result<i64, Error> {
    match seconds {
        0 => Ok(i64::from(DEFAULT_HOLD_SECONDS) * 1000),
        1..=MAX_HOLD_SECONDS => Ok(i64::from(seconds) * 1000),
        _ => Err(Error::invalid(
            "hold_seconds",
            format!("must be 0 (the default of {DEFAULT_HOLD_SECONDS}) to {MAX_HOLD_SECONDS}, got {seconds}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).unwrap(), 20);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(1000).unwrap(), 100);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let token = encode_page_token("book-ddia");
        assert_eq!(decode_page_token(&token).unwrap().as_deref(), Some("book-ddia"));
        assert_eq!(decode_page_token("").unwrap(), None);
        for bad in ["zz", "abc", &hex::encode("book-ddia"), &hex::encode([0xff, 0xfe])] {
            assert!(decode_page_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn updates() {
        assert!(price(0, "USD").is_ok());
        assert!(price(-1, "USD").unwrap_err().to_string().contains("amount_minor"));
        assert!(price(1, "usd").unwrap_err().to_string().contains("currency_code"));
        assert!(stock(-2).unwrap_err().to_string().contains("-2"));
        assert!(product_ids(&[]).is_err());
        assert!(product_ids(&vec!["a".to_owned(); 101]).is_err());
        assert!(product_ids(&[String::new()]).is_err());
    }

    #[test]
    fn reservations() {
        let item = |id: &str, q| (id.to_owned(), q);
        assert!(stock_items(&[item("a", 1), item("b", 2)]).is_ok());
        assert!(stock_items(&[]).is_err());
        assert!(stock_items(&[item("a", 0)]).unwrap_err().to_string().contains("'a'"));
        assert!(
            stock_items(&[item("a", 1), item("a", 1)])
                .unwrap_err()
                .to_string()
                .contains("more than once")
        );
        assert_eq!(hold_ms(0).unwrap(), 60_000);
        assert!(hold_ms(601).unwrap_err().to_string().contains("hold_seconds"));
        assert!(reservation_id("").is_err());
    }
}
