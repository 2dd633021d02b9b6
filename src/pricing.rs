//! Estimates what an answer cost in USD from its usage and the settings' price table.
//!
//! The rules, applied to one answer:
//! - every sampling of the answer (one, or one per compaction iteration) is priced on its own;
//! - its cache writes are split into 5-minute and 1-hour ones, each at its price;
//! - a model with `long_context` rates charges every token of a sampling at those rates when
//!   the sampling's prompt (input + cache writes + cache reads) is over the threshold;
//! - the token cost is multiplied by the model's multiplier for `usage.inference_geo`, for
//!   `usage.speed` (a speed with a multiplier is priced flat over the whole context, without the
//!   long-context rates) and for the `service_tier` the answer reports (OpenAI's flex and
//!   priority processing), and by the batch rate for batch results;
//! - each web search costs `web_search_per_1k / 1000`, whatever the other multipliers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::usage::{Tokens, Usage};

const TOKENS_PER_PRICE_UNIT: f64 = 1_000_000.0;
const SEARCHES_PER_PRICE_UNIT: f64 = 1_000.0;

/// Anthropic charges a 1-hour cache write at twice the input price.
pub const CACHE_WRITE_1H_INPUT_MULTIPLIER: f64 = 2.0;

/// One model's prices, in USD per million tokens (a `[pricing."<model prefix>"]` table).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Writing to the cache, 5-minute lifetime; also charged when the answer gives no split.
    pub cache_write: f64,
    /// Writing to the cache, 1-hour lifetime; twice `input` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    pub cache_read: f64,
    /// Dearer rates for a sampling whose prompt is over a threshold; none = one rate for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContext>,
    /// USD per 1,000 web searches; `[pricing_defaults]` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search_per_1k: Option<f64>,
    /// What batch results cost as a share of the normal price; `[pricing_defaults]`
    /// when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<f64>,
    /// Token cost multiplier per `usage.inference_geo` value (e.g. `us = 1.1`); a value not
    /// listed here or in `[pricing_defaults]` costs 1×.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inference_geo: BTreeMap<String, f64>,
    /// Token cost multiplier per `usage.speed` value (e.g. `fast = 2.0`), as `inference_geo`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub speed: BTreeMap<String, f64>,
    /// Token cost multiplier per `service_tier` the answer reports (OpenAI's `flex = 0.5`,
    /// `priority = 2.5`), as `inference_geo`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_tier: BTreeMap<String, f64>,
}

/// The rates of a model priced by prompt length, in USD per million tokens.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LongContext {
    /// Prompt tokens (input + cache writes + cache reads) above which these rates apply.
    pub threshold: u64,
    pub input: f64,
    pub output: f64,
    pub cache_write: f64,
    /// Twice this section's `input` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    pub cache_read: f64,
}

/// What applies to every model unless its own table says otherwise (`[pricing_defaults]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PricingDefaults {
    #[serde(default = "default_web_search_per_1k")]
    pub web_search_per_1k: f64,
    #[serde(default = "default_batch")]
    pub batch: f64,
    #[serde(default)]
    pub inference_geo: BTreeMap<String, f64>,
    #[serde(default)]
    pub speed: BTreeMap<String, f64>,
    #[serde(default)]
    pub service_tier: BTreeMap<String, f64>,
}

/// $10 per 1,000 web searches on the Anthropic API.
pub const DEFAULT_WEB_SEARCH_PER_1K: f64 = 10.0;
/// Batches are billed at 50 % of the normal price (Anthropic, OpenAI and Gemini alike).
pub const DEFAULT_BATCH: f64 = 0.5;

fn default_web_search_per_1k() -> f64 {
    DEFAULT_WEB_SEARCH_PER_1K
}

fn default_batch() -> f64 {
    DEFAULT_BATCH
}

impl Default for PricingDefaults {
    fn default() -> Self {
        Self {
            web_search_per_1k: DEFAULT_WEB_SEARCH_PER_1K,
            batch: DEFAULT_BATCH,
            inference_geo: BTreeMap::new(),
            speed: BTreeMap::new(),
            service_tier: BTreeMap::new(),
        }
    }
}

impl PricingDefaults {
    /// Same checks as [`Price::validate`]; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidPrice> {
        check_amount("web_search_per_1k", self.web_search_per_1k)?;
        check_multiplier("batch", self.batch)?;
        check_multipliers("inference_geo", &self.inference_geo)?;
        check_multipliers("speed", &self.speed)?;
        check_multipliers("service_tier", &self.service_tier)
    }
}

/// One price per kind of token, resolved (no defaults left to apply).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    input: f64,
    output: f64,
    cache_write_5m: f64,
    cache_write_1h: f64,
    cache_read: f64,
}

impl Rates {
    /// USD for one sampling's tokens at these rates.
    fn charge(&self, tokens: &SplitTokens) -> f64 {
        let charged = [
            (tokens.input, self.input),
            (tokens.output, self.output),
            (tokens.cache_write_5m, self.cache_write_5m),
            (tokens.cache_write_1h, self.cache_write_1h),
            (tokens.cache_read, self.cache_read),
        ];
        charged
            .iter()
            .map(|&(tokens, price)| tokens as f64 * price)
            .sum::<f64>()
            / TOKENS_PER_PRICE_UNIT
    }
}

/// One sampling's tokens with its cache writes split by lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SplitTokens {
    input: u64,
    output: u64,
    cache_write_5m: u64,
    cache_write_1h: u64,
    cache_read: u64,
}

impl SplitTokens {
    /// When the answer splits cache writes into 5-minute and 1-hour ones, each part is charged
    /// at its price, and any cache write tokens the split does not cover at the 5-minute price;
    /// without a split, all cache write tokens are 5-minute ones.
    fn of(tokens: &Tokens) -> Self {
        let (cache_write_5m, cache_write_1h) = match (
            tokens.cache_creation_5m_input_tokens,
            tokens.cache_creation_1h_input_tokens,
        ) {
            (None, None) => (tokens.cache_creation_input_tokens, 0),
            (five_minutes, one_hour) => {
                let five_minutes = five_minutes.unwrap_or(0);
                let one_hour = one_hour.unwrap_or(0);
                let uncovered = tokens
                    .cache_creation_input_tokens
                    .saturating_sub(five_minutes.saturating_add(one_hour));
                (five_minutes.saturating_add(uncovered), one_hour)
            }
        };
        Self {
            input: tokens.input_tokens,
            output: tokens.output_tokens,
            cache_write_5m,
            cache_write_1h,
            cache_read: tokens.cache_read_input_tokens,
        }
    }

    /// What the long-context threshold is compared with.
    fn prompt(&self) -> u64 {
        self.input
            .saturating_add(self.cache_write_5m)
            .saturating_add(self.cache_write_1h)
            .saturating_add(self.cache_read)
    }
}

impl Price {
    /// A price of the four basic rates only; everything else as `[pricing_defaults]` leaves it.
    pub fn new(input: f64, output: f64, cache_write: f64, cache_read: f64) -> Self {
        Self {
            input,
            output,
            cache_write,
            cache_write_1h: None,
            cache_read,
            long_context: None,
            web_search_per_1k: None,
            batch: None,
            inference_geo: BTreeMap::new(),
            speed: BTreeMap::new(),
            service_tier: BTreeMap::new(),
        }
    }

    /// Rejects prices that would make costs meaningless: negative, NaN or infinite amounts, a
    /// zero long-context threshold. The error names the offending field.
    pub fn validate(&self) -> Result<(), InvalidPrice> {
        check_amount("input", self.input)?;
        check_amount("output", self.output)?;
        check_amount("cache_write", self.cache_write)?;
        if let Some(price) = self.cache_write_1h {
            check_amount("cache_write_1h", price)?;
        }
        check_amount("cache_read", self.cache_read)?;
        if let Some(long) = &self.long_context {
            if long.threshold == 0 {
                return Err(invalid(
                    "long_context.threshold",
                    "must be a number of tokens above 0".into(),
                ));
            }
            check_amount("long_context.input", long.input)?;
            check_amount("long_context.output", long.output)?;
            check_amount("long_context.cache_write", long.cache_write)?;
            if let Some(price) = long.cache_write_1h {
                check_amount("long_context.cache_write_1h", price)?;
            }
            check_amount("long_context.cache_read", long.cache_read)?;
        }
        if let Some(price) = self.web_search_per_1k {
            check_amount("web_search_per_1k", price)?;
        }
        if let Some(share) = self.batch {
            check_multiplier("batch", share)?;
        }
        check_multipliers("inference_geo", &self.inference_geo)?;
        check_multipliers("speed", &self.speed)?;
        check_multipliers("service_tier", &self.service_tier)
    }

    /// This price with what it leaves unset taken from `defaults`; its own multipliers win
    /// over the defaults' for the same key.
    pub fn with_defaults(mut self, defaults: &PricingDefaults) -> Self {
        self.web_search_per_1k
            .get_or_insert(defaults.web_search_per_1k);
        self.batch.get_or_insert(defaults.batch);
        for (own, default) in [
            (&mut self.inference_geo, &defaults.inference_geo),
            (&mut self.speed, &defaults.speed),
            (&mut self.service_tier, &defaults.service_tier),
        ] {
            for (key, multiplier) in default {
                own.entry(key.clone()).or_insert(*multiplier);
            }
        }
        self
    }

    /// The 1-hour cache write price: as set, else twice the input price.
    pub fn cache_write_1h(&self) -> f64 {
        self.cache_write_1h
            .unwrap_or(CACHE_WRITE_1H_INPUT_MULTIPLIER * self.input)
    }

    fn base_rates(&self) -> Rates {
        Rates {
            input: self.input,
            output: self.output,
            cache_write_5m: self.cache_write,
            cache_write_1h: self.cache_write_1h(),
            cache_read: self.cache_read,
        }
    }

    /// What `usage` cost at these prices, at the normal price (see [`cost_usd`]).
    pub fn cost_usd(&self, usage: &Usage) -> f64 {
        cost_usd(self, usage, false)
    }
}

impl LongContext {
    fn rates(&self) -> Rates {
        Rates {
            input: self.input,
            output: self.output,
            cache_write_5m: self.cache_write,
            cache_write_1h: self
                .cache_write_1h
                .unwrap_or(CACHE_WRITE_1H_INPUT_MULTIPLIER * self.input),
            cache_read: self.cache_read,
        }
    }
}

/// What `usage` cost at `price`; `batch` for a batch's results. Every rule of the
/// module documentation, and nothing else: the one place a dollar amount is decided.
pub fn cost_usd(price: &Price, usage: &Usage, batch: bool) -> f64 {
    let multiplier_for = |table: &BTreeMap<String, f64>, key: Option<&str>| {
        key.and_then(|key| table.get(key)).copied()
    };
    let speed = multiplier_for(&price.speed, usage.speed.as_deref());
    let geo = multiplier_for(&price.inference_geo, usage.inference_geo.as_deref()).unwrap_or(1.0);
    let tier = multiplier_for(&price.service_tier, usage.service_tier.as_deref()).unwrap_or(1.0);
    let base = price.base_rates();
    let tokens_usd: f64 = usage
        .samplings()
        .map(|sampling| {
            let tokens = SplitTokens::of(&sampling);
            let rates = match &price.long_context {
                Some(long) if speed.is_none() && tokens.prompt() > long.threshold => long.rates(),
                _ => base,
            };
            rates.charge(&tokens)
        })
        .sum();
    let batch_share = if batch {
        price.batch.unwrap_or(DEFAULT_BATCH)
    } else {
        1.0
    };
    let searches_usd = usage.web_search_requests as f64
        * price.web_search_per_1k.unwrap_or(DEFAULT_WEB_SEARCH_PER_1K)
        / SEARCHES_PER_PRICE_UNIT;
    tokens_usd * speed.unwrap_or(1.0) * geo * tier * batch_share + searches_usd
}

/// A price field that makes no sense, named by its path within the price (`long_context.input`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPrice {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for InvalidPrice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.reason)
    }
}

fn invalid(field: &str, reason: String) -> InvalidPrice {
    InvalidPrice {
        field: field.to_string(),
        reason,
    }
}

fn check_amount(name: &str, value: f64) -> Result<(), InvalidPrice> {
    if !value.is_finite() || value < 0.0 {
        return Err(invalid(
            name,
            format!("must be a finite, non-negative USD price, got {value}"),
        ));
    }
    Ok(())
}

fn check_multiplier(name: &str, value: f64) -> Result<(), InvalidPrice> {
    if !value.is_finite() || value < 0.0 {
        return Err(invalid(
            name,
            format!("must be a finite, non-negative multiplier, got {value}"),
        ));
    }
    Ok(())
}

fn check_multipliers(name: &str, table: &BTreeMap<String, f64>) -> Result<(), InvalidPrice> {
    table
        .iter()
        .try_for_each(|(key, value)| check_multiplier(&format!("{name}.{key}"), *value))
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
    ///
    /// Every key that is a prefix of `model` sorts at or before it, a longer one after a
    /// shorter one, so the answer is the last key at or before `model` that is its prefix. The
    /// key there otherwise agrees with `model` only in its first `shared` bytes, and every
    /// prefix of `model` sorting before that key is at most that long: the search goes on from
    /// `model`'s first `shared` bytes, a few steps of the map's ordered search in all instead of
    /// a test of every key (this runs for every request).
    pub fn lookup(&self, model: &str) -> Option<(&str, &Price)> {
        let mut bound = model;
        loop {
            let at_or_before = (std::ops::Bound::Unbounded, std::ops::Bound::Included(bound));
            let (key, price) = self.prices.range::<str, _>(at_or_before).next_back()?;
            if model.starts_with(key.as_str()) {
                return Some((key.as_str(), price));
            }
            let mut shared = key
                .bytes()
                .zip(model.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            while !model.is_char_boundary(shared) {
                shared -= 1;
            }
            bound = &model[..shared];
        }
    }

    /// What `usage` cost, or `None` when the model is unknown or has no price: the caller
    /// counts 0 and makes the gap visible rather than guessing a price.
    pub fn cost_usd(&self, model: Option<&str>, usage: &Usage) -> Option<f64> {
        self.cost_usd_billed(model, usage, false)
    }

    /// As [`cost_usd`](Self::cost_usd), at the batch rate when `batch`.
    pub fn cost_usd_billed(&self, model: Option<&str>, usage: &Usage, batch: bool) -> Option<f64> {
        let (_, price) = self.lookup(model?)?;
        Some(cost_usd(price, usage, batch))
    }

    /// How many models (prefixes) have a price.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }
}

#[cfg(test)]
mod tests;
