//! Checks a charge request and turns it into a [`Charge`] the store can record,
//! including the fingerprint that tells a true replay from a reused key.

use meshwork_proto::{common::Money, payments::ChargeRequest};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::Error;

pub const MAX_KEY_CHARS: usize = 128;

/// A valid charge: one currency, and a total that is the sum of the lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub idempotency_key: String,
    pub user_id: String,
    pub lines: Vec<Line>,
    pub total_minor: i64,
    pub currency: String,
    /// sha256 (hex) of the request as sent.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub product_id: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

pub fn charge(req: ChargeRequest) -> Result<Charge, Error> {
    // Protobuf encoding of one message is deterministic here (no maps, fields in
    // order), so equal requests hash equally.
    let fingerprint = hex::encode(Sha256::digest(req.encode_to_vec()));

    let key_chars = req.idempotency_key.chars().count();
    if !(1..=MAX_KEY_CHARS).contains(&key_chars) {
        return Err(Error::invalid(
            "idempotency_key",
            format!("must be 1 to {MAX_KEY_CHARS} characters, got {key_chars}"),
        ));
    }
    if req.user_id.trim().is_empty() {
        return Err(Error::invalid("user_id", "is required"));
    }
    if req.lines.is_empty() {
        return Err(Error::invalid("lines", "must hold at least one line"));
    }
    let total = req.total.ok_or_else(|| Error::invalid("total", "is required"))?;
    let currency = currency("total", &total)?;

    let mut sum: i64 = 0;
    let mut lines = Vec::with_capacity(req.lines.len());
    for (i, line) in req.lines.into_iter().enumerate() {
        if line.product_id.is_empty() {
            return Err(Error::invalid(format!("lines[{i}].product_id"), "is required"));
        }
        if line.quantity < 1 {
            return Err(Error::invalid(
                format!("lines[{i}].quantity"),
                format!("must be at least 1, got {}", line.quantity),
            ));
        }
        let price = line
            .unit_price
            .ok_or_else(|| Error::invalid(format!("lines[{i}].unit_price"), "is required"))?;
        if price.currency_code != currency {
            return Err(Error::invalid(
                format!("lines[{i}].unit_price.currency_code"),
                format!(
                    "{} differs from the total's {currency}; one currency per charge",
                    price.currency_code
                ),
            ));
        }
        if price.amount_minor < 0 {
            return Err(Error::invalid(
                format!("lines[{i}].unit_price"),
                format!("must not be negative, got {}", price.amount_minor),
            ));
        }
        sum = price
            .amount_minor
            .checked_mul(i64::from(line.quantity))
            .and_then(|amount| sum.checked_add(amount))
            .ok_or_else(|| Error::invalid("lines", "add up to more than the largest amount"))?;
        lines.push(Line {
            product_id: line.product_id,
            name: line.name,
            quantity: line.quantity,
            unit_price_minor: price.amount_minor,
        });
    }
    if total.amount_minor != sum {
        return Err(Error::invalid(
            "total",
            format!("is {} but the lines add up to {sum}", total.amount_minor),
        ));
    }
    Ok(Charge {
        idempotency_key: req.idempotency_key,
        user_id: req.user_id,
        lines,
        total_minor: sum,
        currency,
        fingerprint,
    })
}

fn currency(field: &'static str, m: &Money) -> Result<String, Error> {
    if meshwork_service_kit::is_currency_code(&m.currency_code) {
        Ok(m.currency_code.clone())
    } else {
        Err(Error::invalid(
            field,
            format!("'{}' is not an ISO 4217 currency code", m.currency_code),
        ))
    }
}

pub fn required(field: &'static str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        Err(Error::invalid(field, "is required"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_proto::payments::OrderLine;

    fn usd(amount_minor: i64) -> Option<Money> {
        Some(Money {
            amount_minor,
            currency_code: "USD".into(),
        })
    }

    fn request() -> ChargeRequest {
        ChargeRequest {
            idempotency_key: "k1".into(),
            user_id: "u1".into(),
            lines: vec![
                OrderLine {
                    product_id: "a".into(),
                    name: "A".into(),
                    quantity: 2,
                    unit_price: usd(150),
                },
                OrderLine {
                    product_id: "b".into(),
                    name: "B".into(),
                    quantity: 1,
                    unit_price: usd(0),
                },
            ],
            total: usd(300),
        }
    }

    fn message(req: ChargeRequest) -> String {
        charge(req).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_charge() {
        let c = charge(request()).unwrap();
        assert_eq!((c.total_minor, c.currency.as_str(), c.lines.len()), (300, "USD", 2));
        assert_eq!(c.fingerprint, charge(request()).unwrap().fingerprint);
        let mut other = request();
        other.user_id = "u2".into();
        assert_ne!(c.fingerprint, charge(other).unwrap().fingerprint);
    }

    #[test]
    fn each_mistake_is_named() {
        let mut r = request();
        r.idempotency_key = String::new();
        assert!(message(r).starts_with("idempotency_key "));
        let mut r = request();
        r.idempotency_key = "k".repeat(129);
        assert!(message(r).starts_with("idempotency_key "));
        let mut r = request();
        r.user_id = " ".into();
        assert!(message(r).starts_with("user_id "));
        let mut r = request();
        r.lines.clear();
        assert!(message(r).starts_with("lines "));
        let mut r = request();
        r.lines[0].quantity = 0;
        assert_eq!(message(r), "lines[0].quantity must be at least 1, got 0");
        let mut r = request();
        r.lines[1].unit_price = usd(-1);
        assert!(message(r).contains("must not be negative"));
        let mut r = request();
        r.lines[1].unit_price = Some(Money {
            amount_minor: 0,
            currency_code: "EUR".into(),
        });
        assert!(message(r).contains("one currency"));
        let mut r = request();
        r.total = usd(301);
        assert_eq!(message(r), "total is 301 but the lines add up to 300");
        let mut r = request();
        r.total = None;
        assert!(message(r).starts_with("total "));
        let mut r = request();
        r.lines[0].unit_price = usd(i64::MAX);
        assert!(message(r).contains("largest amount"));
    }
}
