//! Estimates what an answer cost in USD from its usage and the settings' price table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

const TOKENS_PER_PRICE_UNIT: f64 = 1_000_000.0;

/// One model's prices, in USD per million tokens (a `[pricing."<model prefix>"]` table).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Writing to the cache, 5-minute lifetime; also charged when the answer gives no split.
    pub cache_write: f64,
    /// Writing to the cache, 1-hour lifetime; [`Price::cache_write_1h`] when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    pub cache_read: f64,
}

impl Price {
    /// Anthropic charges a 1-hour cache write at twice the input price.
    pub const CACHE_WRITE_1H_INPUT_MULTIPLIER: f64 = 2.0;

    /// Rejects prices that would make costs meaningless: negative, NaN or infinite.
    /// The error names the offending field, e.g. `input must be …`.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("input", Some(self.input)),
            ("output", Some(self.output)),
            ("cache_write", Some(self.cache_write)),
            ("cache_write_1h", self.cache_write_1h),
            ("cache_read", Some(self.cache_read)),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                if !value.is_finite() || value < 0.0 {
                    return Err(format!(
                        "{name} must be a finite, non-negative USD price per million tokens, got {value}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The 1-hour cache write price: as set, else twice the input price.
    pub fn cache_write_1h(&self) -> f64 {
        self.cache_write_1h
            .unwrap_or(Self::CACHE_WRITE_1H_INPUT_MULTIPLIER * self.input)
    }

    /// What `usage` cost at these prices.
    ///
    /// When the answer splits cache writes into 5-minute and 1-hour ones, each part is charged
    /// at its price, and any cache write tokens the split does not cover at `cache_write`;
    /// without a split, all cache write tokens are charged at `cache_write`.
    pub fn cost_usd(&self, usage: &Usage) -> f64 {
        let (cache_write_tokens, cache_write_1h_tokens) = match (
            usage.cache_creation_5m_input_tokens,
            usage.cache_creation_1h_input_tokens,
        ) {
            (None, None) => (usage.cache_creation_input_tokens, 0),
            (five_minutes, one_hour) => {
                let five_minutes = five_minutes.unwrap_or(0);
                let one_hour = one_hour.unwrap_or(0);
                let uncovered = usage
                    .cache_creation_input_tokens
                    .saturating_sub(five_minutes.saturating_add(one_hour));
                (five_minutes.saturating_add(uncovered), one_hour)
            }
        };
        let charged = [
            (usage.input_tokens, self.input),
            (usage.output_tokens, self.output),
            (cache_write_tokens, self.cache_write),
            (cache_write_1h_tokens, self.cache_write_1h()),
            (usage.cache_read_input_tokens, self.cache_read),
        ];
        charged
            .iter()
            .map(|&(tokens, price)| tokens as f64 * price)
            .sum::<f64>()
            / TOKENS_PER_PRICE_UNIT
    }
}

/// Prices by model-name prefix: a model is priced by the longest key that is a prefix of its
/// name, so `claude-opus-4` can cover a whole family while `claude-opus-4-5` overrides it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl PriceTable {
    pub fn new(prices: BTreeMap<String, Price>) -> Self {
        Self { prices }
    }

    /// The longest key that is a prefix of `model`, with its price.
    pub fn lookup(&self, model: &str) -> Option<(&str, &Price)> {
        self.prices
            .iter()
            .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(prefix, price)| (prefix.as_str(), price))
    }

    /// What `usage` cost, or `None` when the model is unknown or has no price: the caller
    /// counts 0 and makes the gap visible rather than guessing a price.
    pub fn cost_usd(&self, model: Option<&str>, usage: &Usage) -> Option<f64> {
        let (_, price) = self.lookup(model?)?;
        Some(price.cost_usd(usage))
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: f64, output: f64, cache_write: f64, cache_read: f64) -> Price {
        Price {
            input,
            output,
            cache_write,
            cache_write_1h: None,
            cache_read,
        }
    }

    fn sonnet() -> Price {
        price(3.0, 15.0, 3.75, 0.30)
    }

    fn table(entries: &[(&str, Price)]) -> PriceTable {
        PriceTable::new(
            entries
                .iter()
                .map(|(prefix, price)| (prefix.to_string(), price.clone()))
                .collect(),
        )
    }

    fn assert_usd(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-12,
            "expected {expected} USD, got {actual}"
        );
    }

    #[test]
    fn longest_matching_prefix_wins() {
        let prices = table(&[
            ("claude-opus-4", price(15.0, 75.0, 18.75, 1.5)),
            ("claude-opus-4-5", price(5.0, 25.0, 6.25, 0.5)),
            ("claude", price(1.0, 1.0, 1.0, 1.0)),
        ]);
        let (key, found) = prices.lookup("claude-opus-4-5-20251101").unwrap();
        assert_eq!(key, "claude-opus-4-5");
        assert_eq!(found.input, 5.0);
        assert_eq!(
            prices.lookup("claude-opus-4-1-20250805").unwrap().0,
            "claude-opus-4"
        );
        assert_eq!(prices.lookup("claude-haiku-4-5").unwrap().0, "claude");
    }

    #[test]
    fn exact_model_name_matches_its_own_key() {
        let prices = table(&[("claude-sonnet-4-5", sonnet())]);
        assert_eq!(
            prices.lookup("claude-sonnet-4-5").unwrap().0,
            "claude-sonnet-4-5"
        );
    }

    #[test]
    fn key_longer_than_model_or_not_a_prefix_does_not_match() {
        let prices = table(&[("claude-sonnet-4-5", sonnet())]);
        assert_eq!(prices.lookup("claude-sonnet-4"), None);
        assert_eq!(prices.lookup("xclaude-sonnet-4-5"), None);
        assert_eq!(prices.lookup("Claude-Sonnet-4-5"), None);
    }

    #[test]
    fn unknown_or_missing_model_has_no_cost() {
        let prices = table(&[("claude-sonnet-4-5", sonnet())]);
        let usage = Usage {
            input_tokens: 100,
            ..Usage::default()
        };
        assert_eq!(prices.cost_usd(Some("gpt-4o"), &usage), None);
        assert_eq!(prices.cost_usd(None, &usage), None);
        assert_eq!(PriceTable::default().cost_usd(Some("claude"), &usage), None);
        assert!(PriceTable::default().is_empty());
    }

    #[test]
    fn cost_sums_every_kind_of_token_per_million() {
        let prices = table(&[("claude-sonnet-4-5", sonnet())]);
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 2_000_000,
            cache_creation_input_tokens: 1_000_000,
            cache_read_input_tokens: 10_000_000,
            ..Usage::default()
        };
        let cost = prices
            .cost_usd(Some("claude-sonnet-4-5-20250929"), &usage)
            .unwrap();
        assert_usd(cost, 3.0 + 30.0 + 3.75 + 3.0);
    }

    #[test]
    fn cache_writes_without_split_are_charged_at_cache_write() {
        let usage = Usage {
            cache_creation_input_tokens: 2_000_000,
            ..Usage::default()
        };
        assert_usd(sonnet().cost_usd(&usage), 7.5);
    }

    #[test]
    fn cache_write_split_charges_each_lifetime_at_its_price() {
        let with_1h_price = Price {
            cache_write_1h: Some(6.0),
            ..sonnet()
        };
        let usage = Usage {
            cache_creation_input_tokens: 3_000_000,
            cache_creation_5m_input_tokens: Some(1_000_000),
            cache_creation_1h_input_tokens: Some(2_000_000),
            ..Usage::default()
        };
        assert_usd(with_1h_price.cost_usd(&usage), 3.75 + 12.0);
    }

    #[test]
    fn one_hour_cache_write_defaults_to_twice_input() {
        assert_eq!(sonnet().cache_write_1h(), 6.0);
        let usage = Usage {
            cache_creation_input_tokens: 1_000_000,
            cache_creation_5m_input_tokens: Some(0),
            cache_creation_1h_input_tokens: Some(1_000_000),
            ..Usage::default()
        };
        assert_usd(sonnet().cost_usd(&usage), 6.0);
    }

    #[test]
    fn cache_writes_not_covered_by_split_are_charged_at_cache_write() {
        let usage = Usage {
            cache_creation_input_tokens: 4_000_000,
            cache_creation_5m_input_tokens: None,
            cache_creation_1h_input_tokens: Some(1_000_000),
            ..Usage::default()
        };
        // 1M at the 1-hour price (2 × 3.0), the other 3M at cache_write.
        assert_usd(sonnet().cost_usd(&usage), 6.0 + 3.0 * 3.75);
    }

    #[test]
    fn split_larger_than_total_is_charged_as_given() {
        let usage = Usage {
            cache_creation_input_tokens: 0,
            cache_creation_5m_input_tokens: Some(1_000_000),
            cache_creation_1h_input_tokens: Some(1_000_000),
            ..Usage::default()
        };
        assert_usd(sonnet().cost_usd(&usage), 3.75 + 6.0);
    }

    #[test]
    fn fixture_sized_answer_costs_cents() {
        // stream-text.sse's usage at Haiku 4.5 prices.
        let haiku = price(1.0, 5.0, 1.25, 0.10);
        let usage = Usage {
            input_tokens: 849,
            output_tokens: 47,
            cache_creation_input_tokens: 120,
            cache_read_input_tokens: 3000,
            cache_creation_5m_input_tokens: Some(120),
            cache_creation_1h_input_tokens: Some(0),
        };
        let expected = (849.0 * 1.0 + 47.0 * 5.0 + 120.0 * 1.25 + 3000.0 * 0.10) / 1e6;
        assert_usd(haiku.cost_usd(&usage), expected);
    }

    #[test]
    fn validate_rejects_negative_and_non_finite_prices() {
        assert_eq!(sonnet().validate(), Ok(()));
        assert_eq!(price(0.0, 0.0, 0.0, 0.0).validate(), Ok(()));
        let bad = [
            price(-1.0, 15.0, 3.75, 0.3),
            price(3.0, f64::NAN, 3.75, 0.3),
            price(3.0, 15.0, f64::INFINITY, 0.3),
            price(3.0, 15.0, 3.75, f64::NEG_INFINITY),
            Price {
                cache_write_1h: Some(-0.5),
                ..sonnet()
            },
        ];
        let names = [
            "input",
            "output",
            "cache_write",
            "cache_read",
            "cache_write_1h",
        ];
        for (price, name) in bad.iter().zip(names) {
            let error = price.validate().unwrap_err();
            assert!(error.starts_with(name), "{error:?} should name {name}");
        }
    }

    #[test]
    fn price_reads_from_settings_and_rejects_unknown_fields() {
        let read: Price = serde_json::from_str(
            r#"{"input":3.0,"output":15.0,"cache_write":3.75,"cache_read":0.3}"#,
        )
        .unwrap();
        assert_eq!(read, sonnet());
        let with_1h: Price = serde_json::from_str(
            r#"{"input":3.0,"output":15.0,"cache_write":3.75,"cache_write_1h":6.5,"cache_read":0.3}"#,
        )
        .unwrap();
        assert_eq!(with_1h.cache_write_1h(), 6.5);
        let unknown = serde_json::from_str::<Price>(
            r#"{"input":3.0,"output":15.0,"cache_write":3.75,"cache_read":0.3,"cache_wrte":1}"#,
        );
        assert!(unknown.is_err());
    }
}
