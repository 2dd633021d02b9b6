//! `/metrics`: Prometheus counters and latency histograms, labelled by route, model, source and
//! status class only (no per-session or per-key labels: bounded cardinality, no identities).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::record::RequestRecord;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    model: String,
    source: String,
    status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

pub struct Exposition {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    streamed: Family<RequestLabels, Counter>,
    incomplete: Family<RequestLabels, Counter>,
    input_tokens: Family<RequestLabels, Counter>,
    output_tokens: Family<RequestLabels, Counter>,
    cache_creation_tokens: Family<RequestLabels, Counter>,
    cache_read_tokens: Family<RequestLabels, Counter>,
    cost: Family<RequestLabels, Counter<f64, AtomicU64>>,
    dropped: Counter,
    ttfb: Family<RouteLabels, Histogram>,
    total: Family<RouteLabels, Histogram>,
    overhead: Family<RouteLabels, Histogram>,
}

impl Default for Exposition {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::<RequestLabels, Counter>::default();
        let streamed = Family::<RequestLabels, Counter>::default();
        let incomplete = Family::<RequestLabels, Counter>::default();
        let input_tokens = Family::<RequestLabels, Counter>::default();
        let output_tokens = Family::<RequestLabels, Counter>::default();
        let cache_creation_tokens = Family::<RequestLabels, Counter>::default();
        let cache_read_tokens = Family::<RequestLabels, Counter>::default();
        let cost = Family::<RequestLabels, Counter<f64, AtomicU64>>::default();
        let dropped = Counter::default();
        // 100 µs … ~1.6 h in factors of 4: covers both sluice's own overhead and long answers.
        let seconds = || Histogram::new(exponential_buckets(0.0001, 4.0, 14));
        let ttfb =
            Family::<RouteLabels, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        let total =
            Family::<RouteLabels, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        let overhead =
            Family::<RouteLabels, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        registry.register("requests", "Finished requests", requests.clone());
        registry.register(
            "streamed",
            "Finished requests whose answer was an event stream",
            streamed.clone(),
        );
        registry.register(
            "incomplete",
            "Streams that ended early (client gone, upstream cut, idle timeout)",
            incomplete.clone(),
        );
        registry.register("input_tokens", "Input tokens", input_tokens.clone());
        registry.register("output_tokens", "Output tokens", output_tokens.clone());
        registry.register(
            "cache_creation_input_tokens",
            "Cache write input tokens",
            cache_creation_tokens.clone(),
        );
        registry.register(
            "cache_read_input_tokens",
            "Cache read input tokens",
            cache_read_tokens.clone(),
        );
        registry.register("cost_usd", "Estimated cost in US dollars", cost.clone());
        registry.register(
            "dropped_records",
            "Request records dropped because the aggregator was saturated",
            dropped.clone(),
        );
        registry.register(
            "ttfb_seconds",
            "Time from request received to upstream response head",
            ttfb.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request received to the end of the answer",
            total.clone(),
        );
        registry.register(
            "overhead_seconds",
            "Time sluice itself added to a request",
            overhead.clone(),
        );
        Self {
            registry,
            requests,
            streamed,
            incomplete,
            input_tokens,
            output_tokens,
            cache_creation_tokens,
            cache_read_tokens,
            cost,
            dropped,
            ttfb,
            total,
            overhead,
        }
    }
}

impl Exposition {
    pub fn observe(&self, record: &RequestRecord, cost: f64) {
        let labels = RequestLabels {
            route: record.route.clone(),
            model: record.model.clone().unwrap_or_default(),
            source: record
                .source
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            status_class: format!("{}xx", record.status / 100),
        };
        self.requests.get_or_create(&labels).inc();
        if record.streamed {
            self.streamed.get_or_create(&labels).inc();
        }
        if record.outcome.is_incomplete() {
            self.incomplete.get_or_create(&labels).inc();
        }
        let usage = &record.usage;
        for (family, value) in [
            (&self.input_tokens, usage.input_tokens),
            (&self.output_tokens, usage.output_tokens),
            (
                &self.cache_creation_tokens,
                usage.cache_creation_input_tokens,
            ),
            (&self.cache_read_tokens, usage.cache_read_input_tokens),
        ] {
            if value > 0 {
                family.get_or_create(&labels).inc_by(value);
            }
        }
        if cost > 0.0 {
            self.cost.get_or_create(&labels).inc_by(cost);
        }
        let route = RouteLabels {
            route: record.route.clone(),
        };
        if let Some(ttfb) = record.ttfb {
            self.ttfb.get_or_create(&route).observe(ttfb.as_secs_f64());
        }
        self.total
            .get_or_create(&route)
            .observe(record.total.as_secs_f64());
        if let Some(overhead) = record.overhead {
            self.overhead
                .get_or_create(&route)
                .observe(overhead.as_secs_f64());
        }
    }

    /// Brings the dropped-records counter up to `dropped` (counted by the request path).
    pub fn set_dropped(&self, dropped: u64) {
        let seen = self.dropped.get();
        if dropped > seen {
            self.dropped.inc_by(dropped - seen);
        }
    }

    /// OpenMetrics text, as prometheus-client writes it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, for scrapers and
/// tools that do not ask for OpenMetrics (`promtool check metrics`, curl): counters' HELP/TYPE
/// name the `_total` series, and there is no `# EOF` or `# UNIT`.
pub fn to_classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(line.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counter_series_and_drops_eof() {
        let om = "# HELP sluice_requests Finished requests.\n# TYPE sluice_requests counter\n\
                  sluice_requests_total{route=\"/a\"} 1\n# HELP sluice_ttfb_seconds T.\n\
                  # TYPE sluice_ttfb_seconds histogram\nsluice_ttfb_seconds_count 0\n# EOF\n";
        let classic = to_classic_text(om);
        assert_eq!(
            classic,
            "# HELP sluice_requests_total Finished requests.\n# TYPE sluice_requests_total counter\n\
             sluice_requests_total{route=\"/a\"} 1\n# HELP sluice_ttfb_seconds T.\n\
             # TYPE sluice_ttfb_seconds histogram\nsluice_ttfb_seconds_count 0\n"
        );
    }
}
