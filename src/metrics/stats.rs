//! What `/stats` keeps in memory beside the store: rate-limit state per credential and the
//! models seen without a price, each bounded whatever clients send. Pure data, no actix.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::counters::Counters;
use super::record::RequestRecord;
use crate::subscription::{self, Window};

/// How many keys the recency-bounded views keep (credentials, sessions, agents, projects):
/// the most recently seen.
pub const MAX_RECENT_KEYS: usize = 1000;
/// How many models without a price are named; requests of further ones count under
/// [`OTHER`].
pub const MAX_OTHER_MODELS: usize = 200;
/// The key under which names beyond a bound are counted.
pub const OTHER: &str = "other";
/// Longer keys are cut to this many bytes (they are keys, not content).
const MAX_KEY_BYTES: usize = 128;

fn truncate(key: &str) -> &str {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let mut end = MAX_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// The latest rate-limit headers seen for one credential.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimitState {
    pub seen_at: String,
    pub headers: BTreeMap<String, String>,
    /// The unified subscription status (`anthropic-ratelimit-unified-status`), when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The unified subscription windows (`5h`, `7d`, …), parsed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub windows: BTreeMap<String, Window>,
    /// OpenAI's `x-ratelimit-*-requests` headers, typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<RateLimit>,
    /// OpenAI's `x-ratelimit-*-tokens` headers, typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<RateLimit>,
}

impl RateLimitState {
    /// The record's rate-limit headers, or `None` when it carried none.
    pub fn of_record(record: &RequestRecord) -> Option<Self> {
        if record.rate_limits.is_empty() {
            return None;
        }
        let subscription = subscription::parse(
            record
                .rate_limits
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
        .unwrap_or_default();
        let header = |name: &str| {
            (record.rate_limits.iter())
                .find(|(header, _)| header.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        let limit = |kind: &str| {
            RateLimit::of(
                |field| header(&format!("x-ratelimit-{field}-{kind}")),
                record.finished_at,
            )
        };
        Some(Self {
            seen_at: rfc3339(record.finished_at),
            headers: record.rate_limits.iter().cloned().collect(),
            status: subscription.status,
            windows: subscription.windows,
            requests: limit("requests"),
            tokens: limit("tokens"),
        })
    }
}

/// One of OpenAI's rate limits as its `x-ratelimit-{limit,remaining,reset}-<kind>` headers
/// tell it; `resets_at` is when the answer was seen plus the reset's duration (`6m0s`, `20ms`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub resets_at: Option<String>,
}

impl RateLimit {
    /// From the headers `field` (`limit`, `remaining`, `reset`) names; `None` when none is sent.
    fn of<'a>(
        field: impl Fn(&str) -> Option<&'a str>,
        seen_at: std::time::SystemTime,
    ) -> Option<Self> {
        let number = |name| field(name).and_then(|v| v.trim().parse::<u64>().ok());
        let limit = Self {
            limit: number("limit"),
            remaining: number("remaining"),
            resets_at: field("reset")
                .and_then(go_duration)
                .map(|wait| rfc3339(seen_at + wait)),
        };
        (limit != Self::default()).then_some(limit)
    }
}

/// A duration as OpenAI's reset headers write it: `1h2m3s`, `6m0s`, `1.5s`, `20ms`.
fn go_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text.trim();
    let mut total = 0.0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, seconds) = if rest.starts_with("ms") {
            ("ms", 0.001)
        } else if rest.starts_with('h') {
            ("h", 3600.0)
        } else if rest.starts_with('m') {
            ("m", 60.0)
        } else if rest.starts_with('s') {
            ("s", 1.0)
        } else {
            return None;
        };
        rest = &rest[unit.len()..];
        total += value * seconds;
    }
    (total.is_finite() && total < 1e9).then(|| std::time::Duration::from_secs_f64(total))
}

/// The `capacity` most recently set keys with their values; setting a key makes it the newest,
/// and the oldest goes when there are too many. Every step is O(log n).
#[derive(Debug, Clone)]
pub struct Recent<V> {
    capacity: usize,
    sequence: u64,
    entries: HashMap<String, (u64, V)>,
    /// Sequence number of each key's last setting → the key.
    order: BTreeMap<u64, String>,
    /// How many keys were let go.
    evicted: u64,
}

impl<V: Clone> Recent<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            sequence: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            evicted: 0,
        }
    }

    pub fn set(&mut self, key: &str, value: V) {
        let key = truncate(key);
        self.sequence += 1;
        if let Some((before, _)) = self.entries.insert(key.to_string(), (self.sequence, value)) {
            self.order.remove(&before);
        }
        self.order.insert(self.sequence, key.to_string());
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            self.evicted = self.evicted.saturating_add(1);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The kept keys and values, by key.
    pub fn to_map(&self) -> BTreeMap<String, V> {
        self.entries
            .iter()
            .map(|(key, (_, value))| (key.clone(), value.clone()))
            .collect()
    }
}

/// Models seen with tokens but without a price (their cost counted as 0): at most
/// [`MAX_OTHER_MODELS`] names, the rest counted under [`OTHER`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UnpricedModels {
    counts: BTreeMap<String, u64>,
    /// Requests counted under [`OTHER`].
    folded: u64,
}

impl UnpricedModels {
    /// Counts one finished request. `cost` is `None` when the model has no price.
    pub fn add(&mut self, record: &RequestRecord, cost: Option<f64>) {
        if cost.is_some() || !Counters::of_record(record, 0.0).has_tokens() {
            return;
        }
        let model = truncate(record.model.as_deref().unwrap_or("(unknown)"));
        let named = self.counts.len() - usize::from(self.counts.contains_key(OTHER));
        let key = if self.counts.contains_key(model) || named < MAX_OTHER_MODELS {
            model
        } else {
            self.folded = self.folded.saturating_add(1);
            OTHER
        };
        let count = self.counts.entry(key.to_string()).or_default();
        *count = count.saturating_add(1);
    }

    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    pub fn folded(&self) -> u64 {
        self.folded
    }
}

/// Keeps every model `priced` accepts and at most `others` more (those with the most requests,
/// then by name); the rest are merged under [`OTHER`]. Returns how many requests were merged.
pub fn fold_models(
    models: &mut BTreeMap<String, Counters>,
    priced: impl Fn(&str) -> bool,
    others: usize,
) -> u64 {
    let mut unpriced: Vec<(&String, u64)> = models
        .iter()
        .filter(|(name, _)| !priced(name) && *name != OTHER)
        .map(|(name, c)| (name, c.requests))
        .collect();
    if unpriced.len() <= others {
        return 0;
    }
    unpriced.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let dropped: Vec<String> = unpriced[others..]
        .iter()
        .map(|(name, _)| (*name).clone())
        .collect();
    let mut other = Counters::default();
    for name in dropped {
        if let Some(counters) = models.remove(&name) {
            other.merge(&counters);
        }
    }
    let folded = other.requests;
    models.entry(OTHER.into()).or_default().merge(&other);
    folded
}

pub fn unix_seconds(time: std::time::SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub fn rfc3339(time: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Parses `?since=`: `30m`, `5h`, `7d` (before `now`) or an RFC 3339 time, into unix seconds.
pub fn parse_since(text: &str, now: std::time::SystemTime) -> Option<i64> {
    let now = unix_seconds(now);
    let text = text.trim();
    if let Some(unit) = text.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        if let Ok(amount) = text[..text.len() - 1].parse::<i64>() {
            let seconds = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return None,
            };
            return (amount >= 0).then(|| now - amount.saturating_mul(seconds));
        }
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CredentialSource;
    use crate::usage::Usage;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn record(model: &str, rate_limits: Vec<(String, String)>) -> RequestRecord {
        RequestRecord {
            finished_at: UNIX_EPOCH + Duration::from_secs(6000),
            route: "/anthropic".into(),
            method: "POST".into(),
            path: "/anthropic/v1/messages".into(),
            status: 200,
            model: Some(model.into()),
            source: Some(CredentialSource::ClientOauth),
            credential: Some("client_oauth:3fa29c1b4d5e".into()),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..Usage::default()
            },
            streamed: true,
            rate_limits,
            ..RequestRecord::default()
        }
    }

    #[test]
    fn recent_keeps_the_newest_keys_and_a_reset_key_becomes_newest() {
        let mut recent = Recent::new(3);
        for key in ["a", "b", "c"] {
            recent.set(key, 1);
        }
        recent.set("a", 2);
        recent.set("d", 1);
        let kept = recent.to_map();
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["a", "c", "d"]);
        assert_eq!(kept["a"], 2);
        assert_eq!(recent.evicted(), 1);
        // However many keys arrive, the newest is kept and the size holds.
        for i in 0..10_000 {
            recent.set(&format!("k{i}"), i);
        }
        assert_eq!(recent.len(), 3);
        assert!(recent.to_map().contains_key("k9999"));
        assert_eq!(recent.order.len(), 3);
    }

    #[test]
    fn unified_subscription_headers_are_kept_parsed_beside_the_raw_ones() {
        let limited = record(
            "claude-sonnet-4-5",
            vec![
                (
                    "anthropic-ratelimit-unified-status".into(),
                    "allowed".into(),
                ),
                (
                    "anthropic-ratelimit-unified-5h-utilization".into(),
                    "0.42".into(),
                ),
                (
                    "anthropic-ratelimit-unified-5h-reset".into(),
                    "1795760000".into(),
                ),
            ],
        );
        let state = RateLimitState::of_record(&limited).unwrap();
        assert_eq!(state.status.as_deref(), Some("allowed"));
        assert_eq!(state.windows["5h"].utilization, Some(0.42));
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["windows"]["5h"]["resets_at"], "2026-11-27T06:13:20Z");
        assert_eq!(
            json["headers"]["anthropic-ratelimit-unified-5h-utilization"],
            "0.42"
        );
        assert!(RateLimitState::of_record(&record("m", vec![])).is_none());
    }

    #[test]
    fn unpriced_models_are_named_up_to_the_bound_then_other() {
        let mut unpriced = UnpricedModels::default();
        unpriced.add(&record("priced", vec![]), Some(0.1));
        for i in 0..MAX_OTHER_MODELS + 5 {
            unpriced.add(&record(&format!("m{i}"), vec![]), None);
        }
        unpriced.add(&record("m0", vec![]), None);
        let counts = unpriced.counts();
        assert_eq!(counts.len(), MAX_OTHER_MODELS + 1);
        assert_eq!(counts[OTHER], 5);
        assert_eq!(counts["m0"], 2);
        assert!(!counts.contains_key("priced"));
        assert_eq!(unpriced.folded(), 5);
    }

    #[test]
    fn models_beyond_the_bound_fold_into_other_and_priced_ones_stay() {
        let mut models = BTreeMap::new();
        let counters = |requests| Counters {
            requests,
            input_tokens: requests * 10,
            ..Counters::default()
        };
        models.insert("claude-sonnet-4-5".to_string(), counters(1));
        for (name, requests) in [("x", 5), ("y", 3), ("z", 3), ("w", 1)] {
            models.insert(name.to_string(), counters(requests));
        }
        let folded = fold_models(&mut models, |m| m.starts_with("claude-"), 2);
        assert_eq!(folded, 4);
        assert_eq!(
            models.keys().collect::<Vec<_>>(),
            ["claude-sonnet-4-5", OTHER, "x", "y"]
        );
        assert_eq!(models[OTHER], counters(4));
        assert_eq!(fold_models(&mut models, |_| false, 10), 0);
    }

    #[test]
    fn since_accepts_durations_and_rfc3339() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_since("30m", now), Some(1_000_000 - 1800));
        assert_eq!(parse_since("5h", now), Some(1_000_000 - 18_000));
        assert_eq!(parse_since("7d", now), Some(1_000_000 - 604_800));
        assert_eq!(
            parse_since("2026-11-27T10:00:00Z", now),
            Some(1_795_773_600)
        );
        assert_eq!(parse_since("yesterday", now), None);
        assert_eq!(parse_since("5x", now), None);
        let _ = SystemTime::now();
    }

    #[test]
    fn openai_rate_limit_headers_are_typed() {
        let record = RequestRecord {
            finished_at: UNIX_EPOCH + Duration::from_secs(1_764_972_000),
            rate_limits: [
                ("x-ratelimit-limit-requests", "5000"),
                ("x-ratelimit-remaining-requests", "4999"),
                ("x-ratelimit-reset-requests", "12ms"),
                ("x-ratelimit-limit-tokens", "2000000"),
                ("x-ratelimit-remaining-tokens", "1994000"),
                ("x-ratelimit-reset-tokens", "1m30.5s"),
            ]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
            ..RequestRecord::default()
        };
        let state = RateLimitState::of_record(&record).unwrap();
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(
            json["requests"],
            serde_json::json!({"limit": 5000, "remaining": 4999, "resets_at": "2025-12-05T22:00:00Z"})
        );
        assert_eq!(
            json["tokens"],
            serde_json::json!({"limit": 2000000, "remaining": 1994000, "resets_at": "2025-12-05T22:01:30Z"})
        );
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(go_duration("soon"), None);
        // An Anthropic answer's state has no such fields.
        let anthropic = RequestRecord {
            rate_limits: vec![("retry-after".into(), "7".into())],
            ..RequestRecord::default()
        };
        let json = serde_json::to_value(RateLimitState::of_record(&anthropic).unwrap()).unwrap();
        assert!(json.get("requests").is_none());
    }
}
