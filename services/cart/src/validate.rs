//! Checks on cart requests. Each error names the field.

use crate::Error;

/// Most units of one product a cart may hold; keeps sums far from overflow.
pub const MAX_QUANTITY: i32 = 10_000;

pub fn required(field: &'static str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        Err(Error::invalid(field, "is required"))
    } else {
        Ok(())
    }
}

pub fn quantity(quantity: i32) -> Result<(), Error> {
    if quantity < 1 {
        return Err(Error::invalid(
            "quantity",
            format!("must be at least 1, got {quantity}"),
        ));
    }
    if quantity > MAX_QUANTITY {
        return Err(Error::invalid(
            "quantity",
            format!("must be at most {MAX_QUANTITY}, got {quantity}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert!(quantity(1).is_ok());
        assert_eq!(
            quantity(-2).unwrap_err().to_string(),
            "quantity must be at least 1, got -2"
        );
        assert!(quantity(0).is_err());
        assert!(quantity(MAX_QUANTITY + 1).is_err());
        assert!(required("user_id", " ").is_err());
    }
}
