//! Checks on `shop.common.v1.Money` fields that several services share.

/// Is `code` shaped like an ISO 4217 code: exactly three uppercase ASCII letters?
/// (Whether the code is actually assigned is not checked: that list changes.)
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes() {
        assert!(is_currency_code("USD"));
        assert!(is_currency_code("EUR"));
        for bad in ["", "usd", "US", "USDD", "U5D", "ÜSD"] {
            assert!(!is_currency_code(bad), "{bad}");
        }
    }
}
