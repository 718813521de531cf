//! Prices in the shopper's currency: the `currency` the call's baggage carries
//! (the gateway puts the signed-in user's preference there; see
//! `meshwork_service_kit::context`), converted with the exchange rates in the
//! catalog's database. Every product a shopper is shown, and the prices a
//! checkout's reservation answers with (which the cart charges), are in that
//! currency; a call without one, or with one the rates do not know, gets the
//! stored price. `UpdateProduct` answers with the stored price, as set.

use std::{collections::HashMap, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use meshwork_proto::{catalog::Product, common::Money};

use crate::db::{self, Store};

/// How often each replica reads the rates again.
const REFRESH_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    /// What one US dollar buys, in millionths of the currency's major unit.
    per_usd_micros: i64,
    /// Decimals of the minor unit (2 for cents, 0 for yen).
    exponent: u32,
}

/// The exchange rates, read from the database and swapped in whole.
#[derive(Debug, Default)]
pub struct Rates(ArcSwap<HashMap<String, Rate>>);

impl Rates {
    /// Reads the rates now and then every [`REFRESH_EVERY`] while the process runs.
    pub async fn load(store: &Store) -> anyhow::Result<Arc<Rates>> {
        let rates = Arc::new(Rates::default());
        rates.refresh(store).await?;
        let (kept, store) = (Arc::downgrade(&rates), store.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(rates) = kept.upgrade() else { return };
                if let Err(e) = rates.refresh(&store).await {
                    tracing::warn!(error = %e, "cannot read the exchange rates; keeping the last ones");
                }
            }
        });
        Ok(rates)
    }

    async fn refresh(&self, store: &Store) -> Result<(), meshwork_service_kit::db::sqlx::Error> {
        let rows = db::exchange_rates(&store.db).await?;
        let table = rows
            .into_iter()
            .filter_map(|(currency, per_usd_micros, exponent)| {
                let exponent = u32::try_from(exponent).ok()?;
                Some((
                    currency,
                    Rate {
                        per_usd_micros,
                        exponent,
                    },
                ))
            })
            .collect();
        self.0.store(Arc::new(table));
        Ok(())
    }

    /// Rates from a fixed table (tests).
    #[cfg(test)]
    fn from_table(table: &[(&str, i64, u32)]) -> Rates {
        let table = table
            .iter()
            .map(|&(c, per_usd_micros, exponent)| {
                (
                    c.to_owned(),
                    Rate {
                        per_usd_micros,
                        exponent,
                    },
                )
            })
            .collect();
        Rates(ArcSwap::from_pointee(table))
    }

    /// `product` with its price in `currency`, where the rates know both.
    pub fn shown_in(&self, mut product: Product, currency: Option<&str>) -> Product {
        if let (Some(currency), Some(price)) = (currency, product.price.as_mut())
            && let Some(converted) = self.convert(price, currency)
        {
            *price = converted;
        }
        product
    }

    /// `price` in `currency`, rounded half up to its minor unit; `None` if
    /// either currency is unknown or the amount does not fit.
    fn convert(&self, price: &Money, currency: &str) -> Option<Money> {
        if price.currency_code == currency {
            return None;
        }
        let table = self.0.load();
        let (from, to) = (table.get(&price.currency_code)?, table.get(currency)?);
        // minor_to = minor_from × (to per USD / from per USD) × 10^(exp_to − exp_from)
        let mut numerator = i128::from(price.amount_minor) * i128::from(to.per_usd_micros);
        let mut denominator = i128::from(from.per_usd_micros);
        if to.exponent >= from.exponent {
            numerator *= 10i128.pow(to.exponent - from.exponent);
        } else {
            denominator *= 10i128.pow(from.exponent - to.exponent);
        }
        let amount_minor = i64::try_from((2 * numerator + denominator) / (2 * denominator)).ok()?;
        Some(Money {
            amount_minor,
            currency_code: currency.to_owned(),
        })
    }
}

/// How one call is shown prices: the rates, and the currency its baggage asks for.
#[derive(Debug, Clone)]
pub struct Pricing {
    rates: Arc<Rates>,
    currency: Option<String>,
}

impl Pricing {
    pub fn new(rates: Arc<Rates>, currency: Option<String>) -> Self {
        Pricing { rates, currency }
    }

    /// Stored prices, unconverted.
    #[cfg(test)]
    pub fn stored() -> Self {
        Pricing::new(Arc::default(), None)
    }

    /// The row as the caller is shown it.
    pub fn show(&self, row: crate::db::ProductRow) -> Product {
        self.rates
            .shown_in(crate::service::to_proto(row), self.currency.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(cents: i64) -> Product {
        Product {
            id: "p".into(),
            price: Some(Money {
                amount_minor: cents,
                currency_code: "USD".into(),
            }),
            ..Default::default()
        }
    }

    fn price(p: &Product) -> (i64, &str) {
        let m = p.price.as_ref().unwrap();
        (m.amount_minor, m.currency_code.as_str())
    }

    #[test]
    fn converts_with_each_currencys_minor_unit_and_rounds_half_up() {
        let rates = Rates::from_table(&[("USD", 1_000_000, 2), ("EUR", 920_000, 2), ("JPY", 150_000_000, 0)]);
        assert_eq!(
            price(&rates.shown_in(usd(4599), Some("EUR"))),
            (4231, "EUR"),
            "45.99 × 0.92 = 42.3108"
        );
        assert_eq!(
            price(&rates.shown_in(usd(4599), Some("JPY"))),
            (6899, "JPY"),
            "45.99 × 150 = 6898.5"
        );
        assert_eq!(price(&rates.shown_in(usd(50), Some("EUR"))), (46, "EUR"));
        // Back from yen to euro cents: 6899 ¥ / 150 × 0.92 = 42.3139 €.
        let yen = rates.shown_in(usd(4599), Some("JPY"));
        assert_eq!(price(&rates.shown_in(yen, Some("EUR"))), (4231, "EUR"));
    }

    #[test]
    fn no_currency_or_an_unknown_one_keeps_the_stored_price() {
        let rates = Rates::from_table(&[("USD", 1_000_000, 2), ("EUR", 920_000, 2)]);
        assert_eq!(price(&rates.shown_in(usd(4599), None)), (4599, "USD"));
        assert_eq!(price(&rates.shown_in(usd(4599), Some("XTS"))), (4599, "USD"));
        assert_eq!(price(&rates.shown_in(usd(4599), Some("USD"))), (4599, "USD"));
        assert_eq!(
            price(&rates.shown_in(usd(i64::MAX), Some("EUR"))).1,
            "EUR",
            "i128 inside"
        );
        let rates = Rates::from_table(&[("USD", 1_000_000, 2), ("JPY", 150_000_000, 0)]);
        assert_eq!(
            price(&rates.shown_in(usd(i64::MAX), Some("JPY"))),
            (i64::MAX, "USD"),
            "too large: kept"
        );
    }
}
