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
//! The request path calls [`Ledger::admit`] before anything goes upstream, keeps the
//! [`QuotaGuard`] until the answer's body ends (or the client leaves), and settles it with the
//! request's cost; a refusal becomes [`Error::QuotaExceeded`](crate::error::Error).

pub mod decision;
pub mod ledger;
pub mod settings;
pub mod window;

#[cfg(test)]
mod tests;

use std::time::SystemTime;

use jiff::Timestamp;

pub use ledger::{
    Admission, Ledger, QuotaGuard, QuotaRefusals, QuotaReport, Refusal, MAX_SUBJECTS,
    REPORT_SUBJECTS,
};
pub use settings::{validate, Mode, Quota, QuotaFile, QuotaSettingsError, RequestSubjects};
pub use window::{Spent, Window};

use crate::error::Error;
use crate::usage::Usage;

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
