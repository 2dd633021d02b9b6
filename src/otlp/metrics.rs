//! The metrics sluice pushes, kept cumulative since export was turned on: one series per
//! attribute set, the attribute sets bounded as `/metrics` labels are (models in the price table
//! and the first 50 others, the rest `other`; callers and routes are configured names; at most
//! [`MAX_SERIES`] sets, further requests counted under `otel.metric.overflow = true`).

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::attributes::{self, boolean, string};
use super::{scope, unix_nanos};
use crate::metrics::exposition::ModelLabels;
use crate::metrics::Finished;

/// Token counts per request, as the conventions advise: powers of 4 from 1 to 4^13 (67M).
pub const TOKEN_BOUNDS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Seconds per request, as the conventions advise: 10 ms doubling to 81.92 s (longer answers,
/// such as long streams, fall in the last bucket).
pub const DURATION_BOUNDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Attribute sets kept at most; the rest of the requests count in one overflow series.
pub const MAX_SERIES: usize = 2000;

/// `gen_ai.token.type` values, in the order a series keeps them. `input` is the prompt's
/// uncached part (Anthropic's `input_tokens`), so that the four types add up to every token
/// once, as `/stats` counts them.
pub const TOKEN_TYPES: [&str; 4] = ["input", "output", "cache_read", "cache_creation"];

/// One attribute set of the request metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SeriesKey {
    pub provider: Option<String>,
    pub operation: &'static str,
    pub request_model: String,
    pub response_model: String,
    pub error_type: Option<String>,
    pub route: String,
    pub source: String,
    pub caller: Option<String>,
    pub client: Option<String>,
    /// The set that counts what no longer fits under [`MAX_SERIES`].
    pub overflow: bool,
}

impl SeriesKey {
    fn attributes(&self) -> Vec<KeyValue> {
        if self.overflow {
            return vec![boolean("otel.metric.overflow", true)];
        }
        let mut out = vec![string("gen_ai.operation.name", self.operation)];
        let optional = [
            ("gen_ai.provider.name", self.provider.as_deref()),
            ("gen_ai.request.model", non_empty(&self.request_model)),
            ("gen_ai.response.model", non_empty(&self.response_model)),
            ("error.type", self.error_type.as_deref()),
            ("sluice.route", non_empty(&self.route)),
            ("sluice.source", non_empty(&self.source)),
            ("sluice.caller", self.caller.as_deref()),
            ("sluice.client", self.client.as_deref()),
        ];
        out.extend(
            optional
                .into_iter()
                .filter_map(|(key, value)| Some(string(key, value?))),
        );
        out
    }
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// An explicit-bucket histogram: `counts[i]` holds values in `(bounds[i-1], bounds[i]]`, the
/// last one those above every bound.
#[derive(Debug, Clone)]
pub struct Buckets {
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Buckets {
    fn new(bounds: &[f64]) -> Self {
        Self {
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn observe(&mut self, bounds: &[f64], value: f64) {
        let bucket = bounds.partition_point(|bound| *bound < value);
        self.counts[bucket] += 1;
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

#[derive(Debug, Clone)]
pub struct Series {
    pub requests: u64,
    pub cost_usd: f64,
    pub duration: Buckets,
    /// In [`TOKEN_TYPES`] order; `None` until a request of the set reports that type.
    pub tokens: [Option<Buckets>; 4],
}

impl Series {
    fn new() -> Self {
        Self {
            requests: 0,
            cost_usd: 0.0,
            duration: Buckets::new(&DURATION_BOUNDS),
            tokens: [None, None, None, None],
        }
    }
}

/// Every series since export was turned on.
pub struct MetricsState {
    start: SystemTime,
    series: HashMap<SeriesKey, Series>,
    models: ModelLabels,
}

impl MetricsState {
    pub fn new(start: SystemTime) -> Self {
        Self {
            start,
            series: HashMap::new(),
            models: ModelLabels::default(),
        }
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// The series of a finished request (its model names bounded), with the provider of its
    /// route.
    pub fn key(&mut self, finished: &Finished, provider: Option<String>) -> SeriesKey {
        let record = &finished.record;
        let priced = finished.cost.is_some();
        let response_model = self
            .models
            .label(record.model.as_deref(), priced)
            .to_string();
        let request_model = match record.request_model.as_deref() {
            Some(asked) if Some(asked) != record.model.as_deref() => {
                self.models.label(Some(asked), false).to_string()
            }
            _ => response_model.clone(),
        };
        SeriesKey {
            provider,
            operation: attributes::operation_name(record),
            request_model,
            // An answer that failed names no model of its own.
            response_model: if record.status < 400 {
                response_model
            } else {
                String::new()
            },
            error_type: attributes::error_type(record),
            route: record.route.clone(),
            source: record
                .source
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            caller: record.caller.clone(),
            client: record.client.map(str::to_string),
            overflow: false,
        }
    }

    pub fn add(&mut self, key: SeriesKey, finished: &Finished) {
        let key = if self.series.len() >= MAX_SERIES && !self.series.contains_key(&key) {
            SeriesKey {
                overflow: true,
                ..SeriesKey::default()
            }
        } else {
            key
        };
        let series = self.series.entry(key).or_insert_with(Series::new);
        let record = &finished.record;
        series.requests += 1;
        series.cost_usd += finished.cost.unwrap_or(0.0);
        series
            .duration
            .observe(&DURATION_BOUNDS, record.total.as_secs_f64());
        let usage = &record.usage;
        let reported = usage.input_tokens
            + usage.output_tokens
            + usage.cache_read_input_tokens
            + usage.cache_creation_input_tokens
            > 0;
        if !reported {
            return;
        }
        let amounts = [
            (usage.input_tokens, true),
            (usage.output_tokens, true),
            (usage.cache_read_input_tokens, false),
            (usage.cache_creation_input_tokens, false),
        ];
        for (slot, (amount, always)) in series.tokens.iter_mut().zip(amounts) {
            if always || amount > 0 {
                slot.get_or_insert_with(|| Buckets::new(&TOKEN_BOUNDS))
                    .observe(&TOKEN_BOUNDS, amount as f64);
            }
        }
    }

    /// Every series as one cumulative export request, stamped `now`.
    pub fn request(&self, resource: &Resource, now: SystemTime) -> ExportMetricsServiceRequest {
        let (start, now) = (unix_nanos(self.start), unix_nanos(now));
        let cumulative = AggregationTemporality::Cumulative as i32;
        let histogram_point =
            |attributes: Vec<KeyValue>, buckets: &Buckets, bounds: &[f64]| HistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: buckets.count,
                sum: Some(buckets.sum),
                bucket_counts: buckets.counts.clone(),
                explicit_bounds: bounds.to_vec(),
                min: (buckets.count > 0).then_some(buckets.min),
                max: (buckets.count > 0).then_some(buckets.max),
                ..Default::default()
            };
        let number_point =
            |attributes: Vec<KeyValue>, value: number_data_point::Value| NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(value),
                ..Default::default()
            };
        let mut tokens = Vec::new();
        let mut durations = Vec::new();
        let mut costs = Vec::new();
        let mut requests = Vec::new();
        for (key, series) in &self.series {
            let attributes = key.attributes();
            for (token_type, buckets) in TOKEN_TYPES.iter().zip(&series.tokens) {
                if let Some(buckets) = buckets {
                    let mut with_type = attributes.clone();
                    with_type.push(string("gen_ai.token.type", *token_type));
                    tokens.push(histogram_point(with_type, buckets, &TOKEN_BOUNDS));
                }
            }
            durations.push(histogram_point(
                attributes.clone(),
                &series.duration,
                &DURATION_BOUNDS,
            ));
            costs.push(number_point(
                attributes.clone(),
                number_data_point::Value::AsDouble(series.cost_usd),
            ));
            requests.push(number_point(
                attributes,
                number_data_point::Value::AsInt(series.requests.min(i64::MAX as u64) as i64),
            ));
        }
        let histogram = |name: &str, description: &str, unit: &str, points| Metric {
            name: name.into(),
            description: description.into(),
            unit: unit.into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: points,
                aggregation_temporality: cumulative,
            })),
            ..Default::default()
        };
        let counter = |name: &str, description: &str, unit: &str, points| Metric {
            name: name.into(),
            description: description.into(),
            unit: unit.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: cumulative,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let metrics = vec![
            histogram(
                "gen_ai.client.token.usage",
                "Number of input and output tokens used, by token type",
                "{token}",
                tokens,
            ),
            histogram(
                "gen_ai.client.operation.duration",
                "GenAI operation duration, from request received to the end of the answer",
                "s",
                durations,
            ),
            counter(
                "sluice.cost",
                "Estimated cost in US dollars, priced by sluice's price table",
                "USD",
                costs,
            ),
            counter(
                "sluice.requests",
                "Finished requests",
                "{request}",
                requests,
            ),
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RequestRecord;
    use crate::usage::Usage;
    use std::time::Duration;

    fn finished(model: &str, usage: Usage, cost: Option<f64>, seconds: f64) -> Finished {
        Finished {
            record: RequestRecord {
                route: "/anthropic".into(),
                path: "/anthropic/v1/messages".into(),
                status: 200,
                model: Some(model.into()),
                usage,
                total: Duration::from_secs_f64(seconds),
                ..RequestRecord::default()
            },
            cost,
        }
    }

    #[test]
    fn buckets_hold_values_up_to_their_bound() {
        let mut buckets = Buckets::new(&TOKEN_BOUNDS);
        for value in [0.0, 1.0, 2.0, 4.0, 1e9] {
            buckets.observe(&TOKEN_BOUNDS, value);
        }
        assert_eq!(&buckets.counts[..3], &[2, 2, 0]);
        assert_eq!(buckets.counts[14], 1);
        assert_eq!((buckets.count, buckets.min, buckets.max), (5, 0.0, 1e9));
    }

    #[test]
    fn series_are_bounded_and_the_rest_overflow() {
        let mut state = MetricsState::new(SystemTime::now());
        for i in 0..MAX_SERIES + 100 {
            let mut one = finished("claude-sonnet-4-5", Usage::default(), Some(0.0), 0.1);
            one.record.caller = Some(format!("caller-{i}"));
            let key = state.key(&one, Some("anthropic".into()));
            state.add(key, &one);
        }
        assert_eq!(state.series_count(), MAX_SERIES + 1);
        let overflow = SeriesKey {
            overflow: true,
            ..SeriesKey::default()
        };
        assert_eq!(state.series[&overflow].requests, 100);
        // Unpriced models beyond the cap share one name.
        for i in 0..100 {
            let one = finished(&format!("made-up-{i}"), Usage::default(), None, 0.1);
            let key = state.key(&one, None);
            assert!(i < 50 || key.response_model == "other", "{key:?}");
        }
    }

    #[test]
    fn tokens_by_type_cost_and_duration_add_up() {
        let mut state = MetricsState::new(SystemTime::now());
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 20,
            cache_read_input_tokens: 300,
            ..Usage::default()
        };
        for _ in 0..3 {
            let one = finished("claude-sonnet-4-5", usage.clone(), Some(0.25), 0.5);
            let key = state.key(&one, Some("anthropic".into()));
            state.add(key, &one);
        }
        let request = state.request(&Resource::default(), SystemTime::now());
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "gen_ai.client.token.usage",
                "gen_ai.client.operation.duration",
                "sluice.cost",
                "sluice.requests"
            ]
        );
        let Some(metric::Data::Histogram(tokens)) = &metrics[0].data else {
            panic!("token usage is a histogram");
        };
        // input, output, cache_read; no cache_creation was reported.
        assert_eq!(tokens.data_points.len(), 3);
        let sums: Vec<f64> = tokens.data_points.iter().map(|p| p.sum.unwrap()).collect();
        assert_eq!(sums, vec![30.0, 60.0, 900.0]);
        let Some(metric::Data::Sum(cost)) = &metrics[2].data else {
            panic!("cost is a sum");
        };
        assert!(cost.is_monotonic);
        assert_eq!(
            cost.data_points[0].value,
            Some(number_data_point::Value::AsDouble(0.75))
        );
    }
}
