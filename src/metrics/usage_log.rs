//! The one `sluice::usage` INFO event per finished request, as a sink of the aggregator.

use std::time::Duration;

use tracing::Level;

use super::{Finished, Sink};
use crate::logging::PlainLine;

pub struct UsageLog;

impl Sink for UsageLog {
    fn accept(&mut self, batch: &[Finished]) {
        for finished in batch {
            log_usage(finished);
        }
    }
}

const TARGET: &str = "sluice::usage";
const MESSAGE: &str = "request finished";

/// The line's figures, rounded: whole microseconds and billionths of a dollar, the precision
/// they have, without binary floating-point tails (`2.6130060000000004`).
struct Figures {
    cost_usd: f64,
    ttfb_ms: f64,
    total_ms: f64,
    overhead_ms: f64,
}

/// Decimal places of [`Figures`]' milliseconds and dollars.
const MS_DECIMALS: u32 = 3;
const USD_DECIMALS: u32 = 9;

impl Figures {
    fn of(Finished { record, cost }: &Finished) -> Figures {
        let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
        Figures {
            cost_usd: cost.map(|usd| (usd * 1e9).round() / 1e9).unwrap_or(0.0),
            ttfb_ms: record.ttfb.map(ms).unwrap_or(0.0),
            total_ms: ms(record.total),
            overhead_ms: record.overhead.map(ms).unwrap_or(0.0),
        }
    }
}

/// Never a secret: the credential is a fingerprint, the path has no query string.
///
/// The line is written by [`crate::logging::write_plain`] in the text format without colours
/// (what a service's log gets): it is most of the aggregator's time per request through tracing's
/// field visitors. JSON and coloured lines go through tracing as before. Both forms write the
/// same bytes (the tests hold them to it); a field added here goes into [`trace_usage`],
/// [`write_usage`] and the field names of [`usage_enabled`].
fn log_usage(finished: &Finished) {
    if !usage_enabled() {
        return;
    }
    let figures = Figures::of(finished);
    if !crate::logging::write_plain(Level::INFO, TARGET, MESSAGE, |line| {
        write_usage(line, finished, &figures)
    }) {
        trace_usage(finished, &figures);
    }
}

/// tracing's own filter, asked for the event's target, level and field names: `RUST_LOG`
/// decides as it does for the event itself.
fn usage_enabled() -> bool {
    tracing::event_enabled!(
        target: TARGET,
        Level::INFO,
        message,
        request_id,
        route,
        provider,
        client,
        method,
        path,
        status,
        model,
        source,
        credential,
        caller,
        session,
        input_tokens,
        output_tokens,
        cache_creation_input_tokens,
        cache_read_input_tokens,
        web_search_requests,
        reasoning_output_tokens,
        usage_missing,
        cost_usd,
        ttfb_ms,
        total_ms,
        overhead_ms,
        outcome,
        estimated
    )
}

fn trace_usage(Finished { record, .. }: &Finished, figures: &Figures) {
    tracing::info!(
        target: TARGET,
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
        cost_usd = figures.cost_usd,
        ttfb_ms = figures.ttfb_ms,
        total_ms = figures.total_ms,
        overhead_ms = figures.overhead_ms,
        outcome = %record.outcome.as_str(),
        estimated = record.estimated,
        "{}", MESSAGE
    );
}

fn write_usage(line: &mut PlainLine, Finished { record, .. }: &Finished, figures: &Figures) {
    line.str("request_id", &record.request_id);
    line.str("route", &record.route);
    line.str("provider", record.provider.unwrap_or(""));
    line.str("client", record.client.unwrap_or(""));
    line.str("method", &record.method);
    line.str("path", &record.path);
    line.u64("status", u64::from(record.status));
    line.str("model", record.model.as_deref().unwrap_or(""));
    line.str("source", record.source.map(|s| s.as_str()).unwrap_or(""));
    line.str("credential", record.credential.as_deref().unwrap_or(""));
    line.str("caller", record.caller.as_deref().unwrap_or(""));
    line.str("session", record.session.as_deref().unwrap_or(""));
    line.u64("input_tokens", record.usage.input_tokens);
    line.u64("output_tokens", record.usage.output_tokens);
    line.u64(
        "cache_creation_input_tokens",
        record.usage.cache_creation_input_tokens,
    );
    line.u64(
        "cache_read_input_tokens",
        record.usage.cache_read_input_tokens,
    );
    line.u64("web_search_requests", record.usage.web_search_requests);
    line.u64(
        "reasoning_output_tokens",
        record.usage.reasoning_output_tokens,
    );
    line.bool("usage_missing", record.usage_missing);
    line.f64("cost_usd", figures.cost_usd, USD_DECIMALS);
    line.f64("ttfb_ms", figures.ttfb_ms, MS_DECIMALS);
    line.f64("total_ms", figures.total_ms, MS_DECIMALS);
    line.f64("overhead_ms", figures.overhead_ms, MS_DECIMALS);
    line.str("outcome", record.outcome.as_str());
    line.bool("estimated", record.estimated);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CredentialSource;
    use crate::metrics::record::{Outcome, RequestRecord};
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;
    use tracing_subscriber::fmt::time::SystemTime as TracingTime;
    use tracing_subscriber::EnvFilter;

    /// Lines written through a subscriber, kept for the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// The text subscriber of `logging::init`, without colours, writing into `captured`.
    fn text_subscriber(filter: &str, captured: &Captured) -> impl tracing::Subscriber {
        let captured = captured.clone();
        crate::logging::text_subscriber(
            EnvFilter::new(filter),
            move || captured.clone(),
            false,
            TracingTime,
        )
    }

    /// The line tracing writes for `finished`, and the one written directly at a time just
    /// before it.
    fn both_lines(finished: &Finished) -> (String, String, SystemTime) {
        let captured = Captured::default();
        let figures = Figures::of(finished);
        let before = SystemTime::now();
        tracing::subscriber::with_default(text_subscriber("info", &captured), || {
            trace_usage(finished, &figures)
        });
        let after = SystemTime::now();
        let mut direct = Vec::new();
        assert!(crate::logging::write_plain_to(
            &mut direct,
            before,
            Level::INFO,
            TARGET,
            MESSAGE,
            |line| write_usage(line, finished, &figures),
        ));
        (captured.text(), String::from_utf8(direct).unwrap(), after)
    }

    fn awkward_records() -> Vec<Finished> {
        let hostile = "a\nb\r\u{1b}[2J\0\u{7f}\u{85}\u{2028}\u{202e}d\u{2066}e\t\\\"x=y \"";
        let outcomes = Outcome::every_kind();
        let costs = [
            None,
            Some(0.0),
            Some(0.1 + 0.2),
            Some(1e-7),
            Some(1.5e-8),
            Some(1e-12),
            Some(1e21),
            Some(123456.789),
            Some(2.6130060000000004),
            Some(-0.0),
            Some(f64::NAN),
        ];
        let mut records = Vec::new();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            for (j, cost) in costs.into_iter().enumerate() {
                let mut record = RequestRecord {
                    request_id: format!("01a24ef0-{i}{j}"),
                    outcome,
                    status: [200, 499, 0, 65535][(i + j) % 4],
                    total: Duration::from_micros([0, 1, 999, 123_456_789][j % 4]),
                    ..RequestRecord::default()
                };
                if j % 2 == 1 {
                    record.route = "/anthropic".into();
                    record.provider = Some("anthropic");
                    record.client = Some("claude-code");
                    record.method = "POST".into();
                    record.path = format!("/anthropic/v1/messages{hostile}");
                    record.model = Some(
                        if i % 2 == 0 {
                            hostile
                        } else {
                            "claude-sonnet-4-5 é 日本 🦀"
                        }
                        .into(),
                    );
                    record.source = Some(CredentialSource::ClientApiKey);
                    record.credential = Some("client_api_key:3f2a9c".into());
                    record.caller = Some(String::new());
                    record.session = Some("\u{200f}session".into());
                    record.usage.input_tokens = u64::MAX;
                    record.usage.output_tokens = 1_000_000_007;
                    record.usage.cache_creation_input_tokens = 10;
                    record.usage.cache_read_input_tokens = 1;
                    record.usage.web_search_requests = 3;
                    record.usage.reasoning_output_tokens = 99;
                    record.usage_missing = true;
                    record.estimated = true;
                    record.ttfb = Some(Duration::from_micros(2_613_006));
                    record.overhead = Some(Duration::MAX);
                }
                records.push(Finished { record, cost });
            }
        }
        records
    }

    #[test]
    fn the_direct_line_is_the_one_tracing_writes() {
        for finished in awkward_records() {
            let (traced, direct, after) = both_lines(&finished);
            // The same bytes after the time; the time as tracing writes it, between the two
            // moments the event was written between.
            let (traced_time, traced_rest) = traced.split_at(27);
            let (direct_time, direct_rest) = direct.split_at(27);
            assert_eq!(direct_rest, traced_rest);
            let mut later = Vec::new();
            crate::logging::write_plain_to(&mut later, after, Level::INFO, TARGET, "", |_| {});
            let later_time = std::str::from_utf8(&later[..27]).unwrap();
            assert!(
                direct_time <= traced_time && traced_time <= later_time,
                "{direct_time} {traced_time} {later_time}"
            );
            assert_eq!(direct.matches('\n').count(), 1, "{direct}");
            assert!(!direct.trim_end().contains(crate::printable::must_escape));
        }
    }

    #[test]
    fn the_direct_line_reads_as_before() {
        let finished = &awkward_records()[12];
        let (_, direct, _) = both_lines(finished);
        assert_eq!(
            &direct[26..],
            "Z  INFO sluice::usage: request finished request_id=01a24ef0-11 route=/anthropic \
             provider=anthropic client=claude-code method=POST \
             path=/anthropic/v1/messagesa\\nb\\r\\u{1b}[2J\\u{0}\\u{7f}\\u{85}\\u{2028}\\u{202e}d\
             \\u{2066}e\\t\\\"x=y \" status=0 model=claude-sonnet-4-5 é 日本 🦀 \
             source=client_api_key credential=client_api_key:3f2a9c caller= \
             session=\\u{200f}session input_tokens=18446744073709551615 \
             output_tokens=1000000007 cache_creation_input_tokens=10 cache_read_input_tokens=1 \
             web_search_requests=3 reasoning_output_tokens=99 usage_missing=true cost_usd=0.0 \
             ttfb_ms=2613.006 total_ms=0.001 overhead_ms=1.8446744073709552e22 \
             outcome=client_gone estimated=true\n"
        );
    }

    /// Whether a line came out for `finished` through the subscriber with `filter`, and what
    /// [`usage_enabled`] said under it.
    fn logged_and_enabled(filter: &str, finished: &Finished) -> (bool, bool) {
        let captured = Captured::default();
        let enabled = tracing::subscriber::with_default(text_subscriber(filter, &captured), || {
            log_usage(finished);
            usage_enabled()
        });
        (!captured.text().is_empty(), enabled)
    }

    #[test]
    fn rust_log_decides_as_it_does_for_the_event() {
        let finished = &awkward_records()[0];
        for (filter, expected) in [
            ("info", true),
            ("warn", false),
            ("error", false),
            ("off", false),
            ("sluice::usage=off", false),
            ("info,sluice::usage=off", false),
            ("warn,sluice::usage=info", true),
            ("sluice=warn", false),
            ("sluice=info", true),
            ("other=info", false),
            ("trace", true),
        ] {
            // The line goes through tracing here (no subscriber of `logging::init`): the gate
            // must agree with the event's own filter.
            let (logged, enabled) = logged_and_enabled(filter, finished);
            assert_eq!(logged, expected, "{filter}");
            assert_eq!(enabled, expected, "{filter}");
        }
        // Directives naming fields: whatever tracing makes of them, the gate agrees.
        for filter in [
            "sluice::usage[model]=off,info",
            "sluice::usage[unknown_field]=off,info",
            "sluice::usage[model]=info,warn",
            "sluice::usage[{model=x}]=off,info",
            "[{outcome}]=info,warn",
        ] {
            let (logged, enabled) = logged_and_enabled(filter, finished);
            assert_eq!(enabled, logged, "{filter}");
        }
    }

    /// The target, level and field names each callsite of `sluice::usage` asked about.
    #[derive(Clone, Default)]
    struct Callsites(Arc<Mutex<Vec<(String, String)>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Callsites {
        fn enabled(
            &self,
            metadata: &tracing::Metadata<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) -> bool {
            if metadata.target() == TARGET {
                let fields: Vec<&str> = metadata.fields().iter().map(|f| f.name()).collect();
                let asked = format!("{} {}", metadata.level(), fields.join(","));
                let mut seen = self.0.lock().unwrap();
                if !seen.iter().any(|(name, _)| name == metadata.name()) {
                    seen.push((metadata.name().to_owned(), asked));
                }
            }
            true
        }

        fn register_callsite(
            &self,
            _: &'static tracing::Metadata<'static>,
        ) -> tracing::subscriber::Interest {
            tracing::subscriber::Interest::sometimes()
        }
    }

    #[test]
    fn the_gate_asks_about_the_event_s_own_fields() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let callsites = Callsites::default();
        let subscriber = tracing_subscriber::registry().with(callsites.clone());
        tracing::subscriber::with_default(subscriber, || {
            assert!(usage_enabled());
            let finished = &awkward_records()[0];
            trace_usage(finished, &Figures::of(finished));
        });
        let seen = callsites.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].1, seen[1].1, "{seen:?}");
    }
}
