//! `/metrics`: Prometheus counters and latency histograms, labelled by route, provider, model,
//! source and status class only (no per-session or per-key labels: bounded cardinality, no
//! identities). The provider is the route's protocol, so it adds no series; the client is left
//! out: a closed set, but it would multiply every family's series, and `/stats` and `/usage`
//! answer per client.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;

use super::counters::{Amount, Counters};
use super::record::RequestRecord;
use super::{Finished, Sink};
use crate::subscription::{self, SubscriptionLimits, MAX_UTILIZATION_SERIES};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    provider: String,
    model: String,
    source: String,
    status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// A subscription window of one credential (its fingerprint, never the secret).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriptionLabels {
    credential: String,
    window: String,
}

/// One Prometheus family per counter of [`Counters`], in its kind (a whole count or dollars).
enum CounterFamily {
    Count(Family<RequestLabels, Counter>),
    Usd(Family<RequestLabels, Counter<f64, AtomicU64>>),
}

/// How many models without a price get a `model` label of their own; requests of further ones
/// are labelled `model="other"`. Models in the price table always have their own.
pub const MAX_UNPRICED_MODEL_LABELS: usize = 50;

/// Which `model` label a request gets. A Prometheus series, once there, keeps counting, so the
/// models without a price that get a label of their own are the first ones seen.
#[derive(Default)]
pub(crate) struct ModelLabels {
    unpriced: HashSet<String>,
}

impl ModelLabels {
    pub(crate) fn label<'a>(&mut self, model: Option<&'a str>, priced: bool) -> &'a str {
        let model = model.unwrap_or_default();
        if priced || model.is_empty() || self.unpriced.contains(model) {
            return model;
        }
        if self.unpriced.len() < MAX_UNPRICED_MODEL_LABELS {
            self.unpriced.insert(model.to_string());
            return model;
        }
        super::stats::OTHER
    }
}

pub struct Exposition {
    registry: Registry,
    models: ModelLabels,
    /// In [`Counters::FIELDS`] order.
    counters: Vec<CounterFamily>,
    dropped: Counter,
    ttfb: Family<RouteLabels, Histogram>,
    total: Family<RouteLabels, Histogram>,
    overhead: Family<RouteLabels, Histogram>,
    subscription_utilization: Family<SubscriptionLabels, Gauge<f64, AtomicU64>>,
    /// The latest unified limits per credential key, with a sequence number for recency; only
    /// the most recent credentials can be shown, so no more than twice the series cap is kept.
    subscriptions: HashMap<String, (u64, SubscriptionLimits)>,
    subscription_sequence: u64,
}

impl Default for Exposition {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let counters = Counters::FIELDS
            .iter()
            .zip(Counters::default().amounts())
            .map(|(&(name, help), kind)| match kind {
                Amount::Count(_) => {
                    let family = Family::<RequestLabels, Counter>::default();
                    registry.register(name, help, family.clone());
                    CounterFamily::Count(family)
                }
                Amount::Usd(_) => {
                    let family = Family::<RequestLabels, Counter<f64, AtomicU64>>::default();
                    registry.register(name, help, family.clone());
                    CounterFamily::Usd(family)
                }
            })
            .collect();
        let dropped = Counter::default();
        registry.register(
            "dropped_records",
            "Request records dropped because the aggregator was saturated",
            dropped.clone(),
        );
        // 100 µs … ~1.6 h in factors of 4: covers both sluice's own overhead and long answers.
        let mut histogram = |name: &str, help: &str| {
            let seconds = || Histogram::new(exponential_buckets(0.0001, 4.0, 14));
            let family = Family::<RouteLabels, Histogram>::new_with_constructor(
                seconds as fn() -> Histogram,
            );
            registry.register(name, help, family.clone());
            family
        };
        let ttfb = histogram(
            "ttfb_seconds",
            "Time from request received to upstream response head",
        );
        let total = histogram(
            "request_duration_seconds",
            "Time from request received to the end of the answer",
        );
        let overhead = histogram("overhead_seconds", "Time sluice itself added to a request");
        let subscription_utilization = Family::default();
        registry.register(
            "subscription_utilization",
            "Share of a subscription rate-limit window used (1 = the limit), per credential fingerprint",
            subscription_utilization.clone(),
        );
        Self {
            registry,
            models: ModelLabels::default(),
            counters,
            dropped,
            ttfb,
            total,
            overhead,
            subscription_utilization,
            subscriptions: HashMap::new(),
            subscription_sequence: 0,
        }
    }
}

impl Sink for Exposition {
    /// Records of one client usually come in runs with the same labels (route, model, source,
    /// status class): each run's series are looked up once, not once per record and family.
    fn accept(&mut self, batch: &[Finished]) {
        let mut start = 0;
        let mut next = batch.first().map(|first| self.series_of(first));
        while let Some(key) = next.take() {
            // The run ends at the first record with other labels, which starts the next run.
            let mut end = start + 1;
            while end < batch.len() {
                let series = self.series_of(&batch[end]);
                if series != key {
                    next = Some(series);
                    break;
                }
                end += 1;
            }
            self.observe(key, &batch[start..end]);
            for finished in &batch[start..end] {
                self.note_subscription(&finished.record);
            }
            start = end;
        }
    }
}

/// What a record's [`RequestLabels`] are made of, borrowed.
#[derive(Clone, Copy, PartialEq)]
struct SeriesOf<'a> {
    route: &'a str,
    provider: &'static str,
    model: &'a str,
    source: &'static str,
    status_class: u16,
}

impl Exposition {
    fn series_of<'a>(&mut self, finished: &'a Finished) -> SeriesOf<'a> {
        let record = &finished.record;
        SeriesOf {
            route: &record.route,
            provider: record.provider.unwrap_or_default(),
            model: self
                .models
                .label(record.model.as_deref(), finished.cost.is_some()),
            source: record.source.map(|s| s.as_str()).unwrap_or_default(),
            status_class: record.status / 100,
        }
    }

    /// Counts a run of records with the same labels. Counts are summed first; dollars are
    /// added record by record, as they always were, so the float sums come out the same.
    fn observe(&self, series: SeriesOf<'_>, run: &[Finished]) {
        let labels = RequestLabels {
            route: series.route.to_string(),
            provider: series.provider.to_string(),
            model: series.model.to_string(),
            source: series.source.to_string(),
            status_class: format!("{}xx", series.status_class),
        };
        let of = |finished: &Finished| {
            Counters::of_record(&finished.record, finished.cost.unwrap_or(0.0)).amounts()
        };
        let mut sums = Counters::default();
        for finished in run {
            sums.merge(&Counters::of_record(
                &finished.record,
                finished.cost.unwrap_or(0.0),
            ));
        }
        for (field, (family, sum)) in self.counters.iter().zip(sums.amounts()).enumerate() {
            match (family, sum) {
                (CounterFamily::Count(family), Amount::Count(n)) if n > 0 => {
                    family.get_or_create(&labels).inc_by(n);
                }
                (CounterFamily::Usd(family), Amount::Usd(usd)) if usd > 0.0 => {
                    let counter = family.get_or_create(&labels);
                    for finished in run {
                        if let Amount::Usd(usd) = of(finished)[field] {
                            if usd > 0.0 {
                                counter.inc_by(usd);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let route = RouteLabels {
            route: series.route.to_string(),
        };
        // A series appears once it has a value, as before: no empty ttfb series for a run of
        // requests that never got an answer head.
        let (mut ttfb, mut overhead) = (None, None);
        let total = self.total.get_or_create(&route);
        for finished in run {
            let record = &finished.record;
            if let Some(time) = record.ttfb {
                let histogram = ttfb.get_or_insert_with(|| self.ttfb.get_or_create(&route));
                histogram.observe(time.as_secs_f64());
            }
            total.observe(record.total.as_secs_f64());
            if let Some(time) = record.overhead {
                let histogram = overhead.get_or_insert_with(|| self.overhead.get_or_create(&route));
                histogram.observe(time.as_secs_f64());
            }
        }
    }

    pub fn register_collector(
        &mut self,
        collector: Box<dyn prometheus_client::collector::Collector>,
    ) {
        self.registry.register_collector(collector);
    }

    /// Keeps the credential's latest unified limits and redraws the utilisation gauges: the
    /// most recently seen credentials, at most [`MAX_UTILIZATION_SERIES`] series.
    fn note_subscription(&mut self, record: &RequestRecord) {
        let Some(credential) = record.credential.as_deref() else {
            return;
        };
        let headers = record
            .rate_limits
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()));
        let Some(limits) = subscription::parse(headers) else {
            return;
        };
        self.subscription_sequence += 1;
        self.subscriptions
            .insert(credential.to_string(), (self.subscription_sequence, limits));
        if self.subscriptions.len() > 2 * MAX_UTILIZATION_SERIES {
            let mut by_age: Vec<(u64, String)> = self
                .subscriptions
                .iter()
                .map(|(key, (seen, _))| (*seen, key.clone()))
                .collect();
            by_age.sort_unstable();
            let excess = by_age.len() - MAX_UTILIZATION_SERIES;
            for (_, key) in by_age.into_iter().take(excess) {
                self.subscriptions.remove(&key);
            }
        }
        let samples = subscription::utilization_samples(
            self.subscriptions
                .iter()
                .map(|(key, (seen, limits))| (key.as_str(), *seen, limits)),
        );
        self.subscription_utilization.clear();
        for sample in samples {
            let labels = SubscriptionLabels {
                credential: sample.credential,
                window: sample.window,
            };
            self.subscription_utilization
                .get_or_create(&labels)
                .set(sample.utilization);
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
    use std::time::SystemTime;

    fn subscription_answer(credential: usize, five_hours: &str) -> Finished {
        Finished {
            record: RequestRecord {
                finished_at: SystemTime::now(),
                route: "/anthropic".into(),
                method: "POST".into(),
                path: "/anthropic/v1/messages".into(),
                status: 200,
                credential: Some(format!("client_oauth:{credential:012x}")),
                rate_limits: vec![
                    (
                        "anthropic-ratelimit-unified-5h-utilization".into(),
                        five_hours.into(),
                    ),
                    (
                        "anthropic-ratelimit-unified-7d-utilization".into(),
                        "0.5".into(),
                    ),
                ],
                ..RequestRecord::default()
            },
            cost: None,
        }
    }

    fn utilization_lines(exposition: &Exposition) -> Vec<String> {
        exposition
            .render()
            .lines()
            .filter(|line| line.starts_with("sluice_subscription_utilization{"))
            .map(str::to_string)
            .collect()
    }

    /// A batch counted in runs shows exactly what counting its records one at a time shows:
    /// interleaved labels, unpriced models, answers without a head, costs whose float sums
    /// depend on their order.
    #[test]
    fn a_batch_counted_in_runs_shows_what_one_record_at_a_time_shows() {
        use crate::credentials::CredentialSource;
        use std::time::Duration;
        let finished = |n: u64| {
            let mut record = RequestRecord {
                finished_at: SystemTime::now(),
                // Labels change every few records, so runs of several records form.
                route: ["/anthropic", "/openai"][(n / 17 % 2) as usize].into(),
                provider: Some(["anthropic", "openai"][(n / 17 % 2) as usize]),
                method: "POST".into(),
                status: [200, 200, 200, 529][(n / 5 % 4) as usize],
                model: (n % 29 != 3)
                    .then(|| ["claude-sonnet-4-5", "mystery-1"][(n / 23 % 2) as usize].into()),
                source: Some(CredentialSource::ClientApiKey),
                ttfb: (n % 4 != 0).then(|| Duration::from_micros(300 + n)),
                total: Duration::from_micros(900 + 7 * n),
                overhead: (n % 6 != 0).then(|| Duration::from_micros(20 + n % 9)),
                streamed: n % 3 == 0,
                ..RequestRecord::default()
            };
            record.usage.input_tokens = 10 + n;
            record.usage.output_tokens = n % 5;
            Finished {
                record,
                cost: (n / 23 % 2 == 0).then(|| (n as f64).sqrt() * 0.37),
            }
        };
        let mut batch: Vec<Finished> = (0..200).map(finished).collect();
        // A run whose answers never came: no ttfb or overhead series for its route.
        let mut unanswered = finished(1);
        unanswered.record.route = "/gemini".into();
        (unanswered.record.ttfb, unanswered.record.overhead) = (None, None);
        batch.insert(100, unanswered);
        let mut in_runs = Exposition::default();
        in_runs.accept(&batch);
        let mut one_by_one = Exposition::default();
        for record in &batch {
            one_by_one.accept(std::slice::from_ref(record));
        }
        // Series come out in hash order, which differs between two expositions.
        let lines = |exposition: &Exposition| {
            let mut lines: Vec<String> = exposition.render().lines().map(str::to_string).collect();
            lines.sort();
            lines
        };
        let (in_runs, one_by_one) = (lines(&in_runs), lines(&one_by_one));
        let differing: Vec<_> = in_runs
            .iter()
            .filter(|line| !one_by_one.contains(line))
            .collect();
        assert!(differing.is_empty(), "{differing:?}");
        assert_eq!(in_runs.len(), one_by_one.len());
        assert!(in_runs
            .iter()
            .any(|line| line.contains("model=\"mystery-1\"")));
    }

    #[test]
    fn subscription_utilization_shows_the_latest_credentials_up_to_the_cap() {
        let mut exposition = Exposition::default();
        let batch: Vec<Finished> = (0..500)
            .map(|credential| subscription_answer(credential, "0.25"))
            .collect();
        exposition.accept(&batch);
        let lines = utilization_lines(&exposition);
        assert_eq!(lines.len(), MAX_UTILIZATION_SERIES);
        // The newest credential (499) is shown, the oldest are not; memory stays bounded.
        assert!(lines.iter().any(|l| l.contains(&format!("{:012x}", 499))));
        assert!(!lines.iter().any(|l| l.contains(&format!("{:012x}", 0))));
        assert!(exposition.subscriptions.len() <= 2 * MAX_UTILIZATION_SERIES);
        // A later answer updates its credential's value in place.
        exposition.accept(&[subscription_answer(499, "0.75")]);
        let lines = utilization_lines(&exposition);
        let newest = format!("credential=\"{:012x}\",window=\"5h\"}} 0.75", 499);
        assert!(lines.iter().any(|l| l.ends_with(&newest)), "{lines:?}");
    }

    #[test]
    fn unpriced_models_beyond_the_cap_are_labelled_other() {
        let mut labels = ModelLabels::default();
        for i in 0..MAX_UNPRICED_MODEL_LABELS + 10 {
            let model = format!("made-up-{i}");
            let expected = if i < MAX_UNPRICED_MODEL_LABELS {
                model.as_str()
            } else {
                "other"
            };
            assert_eq!(labels.label(Some(&model), false), expected);
        }
        // A labelled one keeps its label; a priced one always has its own.
        assert_eq!(labels.label(Some("made-up-0"), false), "made-up-0");
        assert_eq!(
            labels.label(Some("claude-sonnet-4-5"), true),
            "claude-sonnet-4-5"
        );
        assert_eq!(labels.unpriced.len(), MAX_UNPRICED_MODEL_LABELS);
    }

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
