//! `Counters`, the `COUNTERS` object of `/stats`: every field listed once, in the macro call
//! below, with the help text `/metrics` shows for it. Merging, the Prometheus families and the
//! field list all come from that one list; what a record adds to each field is
//! [`Counters::of_record`].

use serde::{Deserialize, Serialize};

use super::record::RequestRecord;

/// A counter's value, as `/metrics` exports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Count(u64),
    Usd(f64),
}

impl Amount {
    /// As a float: a count's value, or dollars.
    pub fn as_f64(self) -> f64 {
        match self {
            Amount::Count(n) => n as f64,
            Amount::Usd(usd) => usd,
        }
    }

    /// The same kind of amount with `value` (a float, as databases sum): counts are truncated
    /// and clamped to `0..=u64::MAX` (`as` saturates), dollars kept as they are.
    pub fn with_value(self, value: f64) -> Amount {
        match self {
            Amount::Count(_) => Amount::Count(value.max(0.0) as u64),
            Amount::Usd(_) => Amount::Usd(value),
        }
    }
}

/// Adding that never wraps: a counter at its maximum stays there.
pub trait Saturating: Copy {
    fn saturating_sum(self, other: Self) -> Self;
    fn amount(self) -> Amount;
    /// The counter's value from an amount of either kind.
    fn from_amount(amount: Amount) -> Self;
}

impl Saturating for u64 {
    fn saturating_sum(self, other: Self) -> Self {
        self.saturating_add(other)
    }
    fn amount(self) -> Amount {
        Amount::Count(self)
    }
    fn from_amount(amount: Amount) -> Self {
        match amount {
            Amount::Count(n) => n,
            Amount::Usd(value) => value.max(0.0) as u64,
        }
    }
}

impl Saturating for f64 {
    fn saturating_sum(self, other: Self) -> Self {
        self + other
    }
    fn amount(self) -> Amount {
        Amount::Usd(self)
    }
    fn from_amount(amount: Amount) -> Self {
        amount.as_f64()
    }
}

macro_rules! counters {
    ($($(#[$meta:meta])* $name:ident: $ty:ty => $help:literal,)*) => {
        /// One group's counters.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Counters {
            $($(#[$meta])* pub $name: $ty,)*
        }

        impl Counters {
            /// Every counter's name (as in `/stats` and, with `sluice_` and `_total`,
            /// `/metrics`) and help text, in `/stats` order.
            pub const FIELDS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($name), $help),)*];

            /// Adds `other` field by field, saturating.
            pub fn merge(&mut self, other: &Counters) {
                $(self.$name = Saturating::saturating_sum(self.$name, other.$name);)*
            }

            /// The values in [`FIELDS`](Self::FIELDS) order.
            pub fn amounts(&self) -> [Amount; Self::FIELDS.len()] {
                [$(Saturating::amount(self.$name),)*]
            }

            /// The counters from values in [`FIELDS`](Self::FIELDS) order (database columns,
            /// arithmetic done on [`amounts`](Self::amounts)).
            pub fn from_amounts(amounts: [Amount; Self::FIELDS.len()]) -> Self {
                let mut amounts = amounts.into_iter();
                Self {
                    $($name: Saturating::from_amount(
                        amounts.next().expect("one amount per field"),
                    ),)*
                }
            }
        }
    };
}

counters! {
    requests: u64 => "Finished requests",
    errors: u64 => "Finished requests answered with a status of 400 or more, or streams that carried an error event",
    streamed: u64 => "Finished requests whose answer was an event stream",
    incomplete: u64 => "Streams that ended early (client gone, upstream cut, idle timeout)",
    input_tokens: u64 => "Input tokens",
    output_tokens: u64 => "Output tokens",
    cache_creation_input_tokens: u64 => "Cache write input tokens",
    cache_read_input_tokens: u64 => "Cache read input tokens",
    web_search_requests: u64 => "Web searches run by the server tool",
    #[serde(serialize_with = "nano_dollars")]
    cost_usd: f64 => "Estimated cost in US dollars",
    reasoning_output_tokens: u64 => "Output tokens spent on reasoning (part of output tokens)",
    usage_missing: u64 => "Streams that ended without reporting their usage",
}

impl Counters {
    /// `self - other` field by field, never below zero.
    pub fn saturating_sub(&self, other: &Counters) -> Counters {
        let mut theirs = other.amounts().into_iter();
        Counters::from_amounts(self.amounts().map(|mine| {
            let theirs = theirs.next().expect("the same fields");
            match (mine, theirs) {
                (Amount::Count(x), Amount::Count(y)) => Amount::Count(x.saturating_sub(y)),
                _ => mine.with_value((mine.as_f64() - theirs.as_f64()).max(0.0)),
            }
        }))
    }

    /// What one finished request adds to every group it belongs to.
    pub fn of_record(record: &RequestRecord, cost: f64) -> Self {
        let usage = &record.usage;
        Self {
            requests: 1,
            errors: u64::from(record.status >= 400 || record.outcome.is_error()),
            streamed: u64::from(record.streamed),
            incomplete: u64::from(record.outcome.is_incomplete()),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            web_search_requests: usage.web_search_requests,
            cost_usd: cost,
            reasoning_output_tokens: usage.reasoning_output_tokens,
            usage_missing: u64::from(record.usage_missing),
        }
    }

    /// Input, output, cache write and cache read tokens together.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }

    /// Any tokens at all.
    pub fn has_tokens(&self) -> bool {
        self.total_tokens() > 0
    }
}

/// Costs are sums of products of floats: shown rounded to 1e-9 USD, so that `0.00172` does not
/// read `0.0017200000000000002`.
fn nano_dollars<S: serde::Serializer>(cost: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(round_cost(*cost))
}

/// A cost rounded to 1e-9 USD, as shown.
pub fn round_cost(cost: f64) -> f64 {
    (cost * 1e9).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_saturates_instead_of_wrapping() {
        let mut counters = Counters {
            requests: u64::MAX,
            ..Counters::default()
        };
        counters.merge(&Counters {
            requests: 1,
            input_tokens: 7,
            ..Counters::default()
        });
        assert_eq!(counters.requests, u64::MAX);
        assert_eq!(counters.input_tokens, 7);
    }

    #[test]
    fn every_field_is_named_and_has_an_amount() {
        let mut names: Vec<&str> = Counters::FIELDS.iter().map(|(n, _)| *n).collect();
        let json = serde_json::to_value(Counters::default()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, keys);
        assert_eq!(Counters::default().amounts().len(), names.len());
    }

    #[test]
    fn amounts_round_trip_and_floats_become_counts() {
        let counters = Counters {
            requests: 3,
            web_search_requests: 2,
            cost_usd: 0.5,
            ..Counters::default()
        };
        assert_eq!(Counters::from_amounts(counters.amounts()), counters);
        let summed = counters
            .amounts()
            .map(|a| a.with_value(a.as_f64() * 2.0 - 1.0));
        let back = Counters::from_amounts(summed);
        assert_eq!((back.requests, back.input_tokens), (5, 0));
        assert_eq!(back.cost_usd, 0.0);
        let huge = Counters::from_amounts(counters.amounts().map(|a| a.with_value(1e30)));
        assert_eq!(huge.requests, u64::MAX);
    }
}
