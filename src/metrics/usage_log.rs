//! The one `sluice::usage` INFO event per finished request, as a sink of the aggregator.

use std::time::Duration;

use super::{Finished, Sink};

pub struct UsageLog;

impl Sink for UsageLog {
    fn accept(&mut self, batch: &[Finished]) {
        for finished in batch {
            log_usage(finished);
        }
    }
}

/// Never a secret: the credential is a fingerprint, the path has no query string.
fn log_usage(Finished { record, cost }: &Finished) {
    // Whole microseconds and billionths of a dollar: the precision the figures have, without
    // binary floating-point tails (`2.6130060000000004`).
    let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
    let cost = cost.map(|usd| (usd * 1e9).round() / 1e9);
    tracing::info!(
        target: "sluice::usage",
        request_id = %record.request_id,
        route = %record.route,
        provider = %record.provider.unwrap_or(""),
        client = %record.client.unwrap_or(""),
        method = %record.method,
        path = %record.path,
        status = record.status,
        model = %record.model.as_deref().unwrap_or(""),
        source = %record.source.map(|s| s.as_str()).unwrap_or(""),
        credential = %record.credential.as_deref().unwrap_or(""),
        caller = %record.caller.as_deref().unwrap_or(""),
        session = %record.session.as_deref().unwrap_or(""),
        input_tokens = record.usage.input_tokens,
        output_tokens = record.usage.output_tokens,
        cache_creation_input_tokens = record.usage.cache_creation_input_tokens,
        cache_read_input_tokens = record.usage.cache_read_input_tokens,
        web_search_requests = record.usage.web_search_requests,
        reasoning_output_tokens = record.usage.reasoning_output_tokens,
        usage_missing = record.usage_missing,
        cost_usd = cost.unwrap_or(0.0),
        ttfb_ms = record.ttfb.map(ms).unwrap_or(0.0),
        total_ms = ms(record.total),
        overhead_ms = record.overhead.map(ms).unwrap_or(0.0),
        outcome = %record.outcome.as_str(),
        estimated = record.estimated,
        "request finished"
    );
}
