//! Quotas: limits on spend, tokens, requests and concurrent requests per subject (a caller,
//! each caller, a route, a model prefix, a credential source, a project), checked before a
//! request goes upstream.
//!
//! - [`settings`]: `[[quotas]]` as written, validated into [`Quota`]s; which subject a request
//!   counts against.
//! - [`window`]: calendar, 5-hour and rolling windows as pure time arithmetic.
//! - [`decision`]: the admission rule as a pure table, and the refusal's words.
//! - [`ledger`]: spend and requests in flight per (quota, subject), shared by the workers
//!   (admission) and the aggregator (charges), with the `/stats` report.
//!
//! The request path calls [`Ledger::admit`] before anything goes upstream, keeps the admission
//! as a [`QuotaHold`] until the answer's body ends (or the client leaves), and settles it with
//! the request's usage; a refusal becomes [`Error::QuotaExceeded`](crate::error::Error).
//! Spend that did not pass through this process (other instances on a shared store, rows
//! loaded at start) comes in through [`Ledger::charge`].

pub mod decision;
pub mod exposition;
pub mod ledger;
pub mod settings;
pub mod window;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::SystemTime;

use jiff::Timestamp;

pub use exposition::QuotaCollector;
pub use ledger::{
    Admission, Claim, Ledger, QuotaGuard, QuotaRefusals, QuotaReport, QuotaSet, Refusal,
    MAX_SUBJECTS, REPORT_SUBJECTS,
};
pub use settings::{validate, Mode, Quota, QuotaFile, QuotaSettingsError, RequestSubjects};
pub use window::{Spent, Window};

use crate::error::Error;
use crate::pricing::PriceTable;
use crate::usage::Usage;

/// An admitted request's hold on its quotas, with the prices to charge it at. Settled where
/// the request's record is finished, before the record goes to the aggregator: the answer's
/// end reaches the client after that, so the next request of the same client is judged on
/// spend that includes this one. Dropped unsettled, it only frees the request's slots.
pub struct QuotaHold {
    guard: QuotaGuard,
    prices: Arc<PriceTable>,
}

impl QuotaHold {
    pub fn new(guard: QuotaGuard, prices: Arc<PriceTable>) -> QuotaHold {
        QuotaHold { guard, prices }
    }

    /// Un-counts the request (a quota judged later refused it) and frees its slots.
    pub fn withdraw(self) {
        self.guard.withdraw();
    }

    /// Takes over a later admission of the same request (its quotas by model).
    pub fn join(&mut self, guard: QuotaGuard) {
        self.guard.join(guard);
    }

    /// Charges what the request used (its model priced from the table, unless its reader
    /// priced it already: `priced_usd`) and frees its slots.
    pub fn settle(
        self,
        model: Option<&str>,
        usage: &Usage,
        priced_usd: Option<f64>,
        finished_at: SystemTime,
    ) {
        let cost = priced_usd.or_else(|| self.prices.cost_usd(model, usage));
        self.guard
            .settle(spent_of(cost, usage), timestamp(finished_at));
    }
}

/// What a finished request counts against money and token limits: its cost (nothing when its
/// model has no price) and its tokens — input, output, cache write and cache read. Its request
/// was counted when it was admitted.
pub fn spent_of(cost_usd: Option<f64>, usage: &Usage) -> Spent {
    let tokens = usage
        .input_tokens
        .saturating_add(usage.output_tokens)
        .saturating_add(usage.cache_creation_input_tokens)
        .saturating_add(usage.cache_read_input_tokens);
    Spent::new(cost_usd.unwrap_or(0.0), tokens, 0)
}

/// A record's finish time as the ledger's clock reads it.
pub fn timestamp(at: SystemTime) -> Timestamp {
    Timestamp::try_from(at).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Error {
        Error::QuotaExceeded {
            quota: refusal.quota,
            message: refusal.message,
            retry_after_s: refusal.retry_after_s,
        }
    }
}
