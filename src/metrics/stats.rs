//! The arithmetic of `/stats`: counters per group, minute buckets for `?since=`, the most recent
//! sessions, rate-limit state per credential. Pure data, no actix; serialisable for the state file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::counters::Counters;
use super::record::RequestRecord;
use crate::subscription::{self, Window};

/// How many Claude Code sessions `by_session` keeps (the most recently active); `by_agent` and
/// `by_project` keep as many.
pub const MAX_SESSIONS: usize = 1000;
/// How long minute buckets are kept for `?since=` windows.
pub const BUCKET_RETENTION_MINUTES: i64 = 8 * 24 * 60;
/// Longer session ids are cut to this many bytes (they are keys, not content).
const MAX_KEY_BYTES: usize = 128;

/// Every group of `/stats` over some span of time.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Groups {
    pub totals: Counters,
    pub by_route: BTreeMap<String, Counters>,
    pub by_model: BTreeMap<String, Counters>,
    pub by_source: BTreeMap<String, Counters>,
    pub by_credential: BTreeMap<String, Counters>,
    pub by_caller: BTreeMap<String, Counters>,
    pub by_session: BTreeMap<String, Counters>,
    pub by_agent: BTreeMap<String, Counters>,
    pub by_project: BTreeMap<String, Counters>,
    pub by_status: BTreeMap<String, u64>,
}

/// When each kept key of the recency-bounded groups was last active.
#[derive(Clone, Copy)]
struct Seen<'a> {
    sessions: &'a BTreeMap<String, u64>,
    agents: &'a BTreeMap<String, u64>,
    projects: &'a BTreeMap<String, u64>,
}

impl Groups {
    /// Adds one request's counters to every group it belongs to. Sessions, agents and projects
    /// beyond `MAX_SESSIONS` each are evicted least recently active first (by `seen`).
    fn add_record(&mut self, record: &RequestRecord, counters: &Counters, seen: Seen) {
        self.totals.merge(counters);
        let add = |map: &mut BTreeMap<String, Counters>, key: Option<&str>| {
            if let Some(key) = key.filter(|k| !k.is_empty()) {
                map.entry(key.to_string()).or_default().merge(counters);
            }
        };
        add(&mut self.by_route, Some(&record.route));
        add(&mut self.by_model, record.model.as_deref());
        add(&mut self.by_source, record.source.map(|s| s.as_str()));
        add(&mut self.by_credential, record.credential.as_deref());
        add(&mut self.by_caller, record.caller.as_deref());
        let [session, agent, project] = recent_keys(record);
        for (group, key, seen) in [
            (&mut self.by_session, session, seen.sessions),
            (&mut self.by_agent, agent, seen.agents),
            (&mut self.by_project, project, seen.projects),
        ] {
            if let Some(key) = key {
                add(group, Some(key));
                evict_oldest_sessions(group, seen);
            }
        }
        let status = self.by_status.entry(record.status.to_string()).or_default();
        *status = status.saturating_add(1);
    }

    fn merge(&mut self, other: &Groups, seen: Seen) {
        self.totals.merge(&other.totals);
        for (mine, theirs) in [
            (&mut self.by_route, &other.by_route),
            (&mut self.by_model, &other.by_model),
            (&mut self.by_source, &other.by_source),
            (&mut self.by_credential, &other.by_credential),
            (&mut self.by_caller, &other.by_caller),
            (&mut self.by_session, &other.by_session),
            (&mut self.by_agent, &other.by_agent),
            (&mut self.by_project, &other.by_project),
        ] {
            for (key, counters) in theirs {
                mine.entry(key.clone()).or_default().merge(counters);
            }
        }
        evict_oldest_sessions(&mut self.by_session, seen.sessions);
        evict_oldest_sessions(&mut self.by_agent, seen.agents);
        evict_oldest_sessions(&mut self.by_project, seen.projects);
        for (status, count) in &other.by_status {
            let mine = self.by_status.entry(status.clone()).or_default();
            *mine = mine.saturating_add(*count);
        }
    }
}

/// The record's session, agent and project, each cut to a key's length.
fn recent_keys(record: &RequestRecord) -> [Option<&str>; 3] {
    [&record.session, &record.agent, &record.project]
        .map(|key| key.as_deref().filter(|key| !key.is_empty()).map(truncate))
}

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

/// Keeps the `MAX_SESSIONS` most recently active sessions; `seen` orders them (a session
/// missing from it is the oldest).
fn evict_oldest_sessions(sessions: &mut BTreeMap<String, Counters>, seen: &BTreeMap<String, u64>) {
    while sessions.len() > MAX_SESSIONS {
        let Some(oldest) = sessions
            .keys()
            .min_by_key(|key| seen.get(*key).copied().unwrap_or(0))
            .cloned()
        else {
            return;
        };
        sessions.remove(&oldest);
    }
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
}

/// All counted usage: lifetime groups, minute buckets, rate-limit state. This is what the state
/// file holds.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsBook {
    /// RFC 3339 time counting began (kept across restarts).
    pub counting_since: String,
    pub lifetime: Groups,
    /// Unix minute → what finished in that minute.
    pub minutes: BTreeMap<i64, Groups>,
    pub rate_limits: BTreeMap<String, RateLimitState>,
    /// Models seen with no price in the table (their cost counted as 0).
    pub unpriced_models: BTreeMap<String, u64>,
    /// When each kept session was last active, as a sequence number: later is larger, and
    /// no two requests tie.
    pub session_seen: BTreeMap<String, u64>,
    /// As `session_seen`, for the kept agents and projects.
    pub agent_seen: BTreeMap<String, u64>,
    pub project_seen: BTreeMap<String, u64>,
    /// The sequence number of the latest request counted.
    pub sequence: u64,
}

impl StatsBook {
    pub fn new(counting_since: String) -> Self {
        Self {
            counting_since,
            ..Self::default()
        }
    }

    /// Adds one finished request. `cost` is `None` when the model has no price.
    pub fn add(&mut self, record: &RequestRecord, cost: Option<f64>) {
        let finished = unix_seconds(record.finished_at);
        let minute = finished.div_euclid(60);
        let counters = Counters::of_record(record, cost.unwrap_or(0.0));
        if cost.is_none() && counters.has_tokens() {
            let model = record.model.as_deref().unwrap_or("(unknown)");
            *self
                .unpriced_models
                .entry(truncate(model).to_string())
                .or_default() += 1;
        }
        let keys = recent_keys(record);
        if keys.iter().any(Option::is_some) {
            self.sequence += 1;
        }
        for (seen, key) in [
            &mut self.session_seen,
            &mut self.agent_seen,
            &mut self.project_seen,
        ]
        .into_iter()
        .zip(keys)
        {
            if let Some(key) = key {
                seen.insert(key.to_string(), self.sequence);
            }
        }
        let seen = Seen {
            sessions: &self.session_seen,
            agents: &self.agent_seen,
            projects: &self.project_seen,
        };
        self.lifetime.add_record(record, &counters, seen);
        self.minutes
            .entry(minute)
            .or_default()
            .add_record(record, &counters, seen);
        self.forget_evicted_sessions();
        if !record.rate_limits.is_empty() {
            let key = record.credential.clone().unwrap_or_else(|| "none".into());
            let subscription = subscription::parse(
                record
                    .rate_limits
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            )
            .unwrap_or_default();
            self.rate_limits.insert(
                key,
                RateLimitState {
                    seen_at: rfc3339(record.finished_at),
                    headers: record.rate_limits.iter().cloned().collect(),
                    status: subscription.status,
                    windows: subscription.windows,
                },
            );
        }
        self.prune(minute);
    }

    /// Keeps recency only for keys the lifetime view still holds: bounded by `MAX_SESSIONS`.
    fn forget_evicted_sessions(&mut self) {
        for (seen, kept) in [
            (&mut self.session_seen, &self.lifetime.by_session),
            (&mut self.agent_seen, &self.lifetime.by_agent),
            (&mut self.project_seen, &self.lifetime.by_project),
        ] {
            if seen.len() > 2 * MAX_SESSIONS {
                seen.retain(|key, _| kept.contains_key(key));
            }
        }
    }

    /// Drops minute buckets older than the retention.
    pub fn prune(&mut self, now_minute: i64) {
        let oldest_kept = now_minute - BUCKET_RETENTION_MINUTES;
        self.minutes = self.minutes.split_off(&oldest_kept);
    }

    /// The groups for requests that finished at or after `since` (unix seconds). Resolution is a
    /// minute: the minute containing `since` is included whole.
    pub fn window(&self, since: Option<i64>) -> Groups {
        let Some(since) = since else {
            return self.lifetime.clone();
        };
        let mut groups = Groups::default();
        for bucket in self.minutes.range(since.div_euclid(60)..).map(|(_, g)| g) {
            groups.merge(
                bucket,
                Seen {
                    sessions: &self.session_seen,
                    agents: &self.agent_seen,
                    projects: &self.project_seen,
                },
            );
        }
        groups
    }
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
    use crate::metrics::record::Outcome;
    use crate::usage::Usage;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn record(at: i64, status: u16, session: &str) -> RequestRecord {
        RequestRecord {
            request_id: String::new(),
            finished_at: UNIX_EPOCH + Duration::from_secs(at as u64),
            route: "/anthropic".into(),
            method: "POST".into(),
            path: "/anthropic/v1/messages".into(),
            status,
            model: Some("claude-sonnet-4-5".into()),
            source: Some(CredentialSource::ClientOauth),
            credential: Some("client_oauth:3fa29c1b4d5e".into()),
            caller: None,
            session: Some(session.into()),
            agent: None,
            parent_agent: None,
            project: None,
            priced_usd: None,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..Usage::default()
            },
            streamed: true,
            outcome: Outcome::Completed,
            ttfb: None,
            total: Duration::ZERO,
            overhead: None,
            upstream_failure: None,
            rate_limits: vec![("retry-after".into(), "7".into())],
        }
    }

    #[test]
    fn stream_with_an_error_event_counts_as_an_error_with_its_tokens() {
        let mut book = StatsBook::new("x".into());
        let errored = RequestRecord {
            outcome: Outcome::UpstreamErrorEvent,
            ..record(6000, 200, "s1")
        };
        book.add(&errored, Some(0.1));
        let g = book.window(None);
        assert_eq!(g.totals.errors, 1);
        assert_eq!(g.totals.incomplete, 0);
        assert_eq!(g.totals.input_tokens, 10);
        assert_eq!(g.by_status["200"], 1);
    }

    #[test]
    fn counters_add_up_in_every_group() {
        let mut book = StatsBook::new("x".into());
        book.add(&record(6000, 200, "s1"), Some(0.5));
        book.add(&record(6030, 429, "s2"), Some(0.25));
        let g = book.window(None);
        assert_eq!(g.totals.requests, 2);
        assert_eq!(g.totals.errors, 1);
        assert_eq!(g.totals.streamed, 2);
        assert_eq!(g.totals.input_tokens, 20);
        assert_eq!(g.totals.cost_usd, 0.75);
        assert_eq!(g.by_status["429"], 1);
        assert_eq!(g.by_session.len(), 2);
        assert_eq!(g.by_source["client_oauth"].requests, 2);
        assert_eq!(
            book.rate_limits["client_oauth:3fa29c1b4d5e"].headers["retry-after"],
            "7"
        );
        assert_eq!(book.rate_limits["client_oauth:3fa29c1b4d5e"].status, None);
    }

    #[test]
    fn unified_subscription_headers_are_kept_parsed_beside_the_raw_ones() {
        let mut book = StatsBook::new("x".into());
        let limited = RequestRecord {
            rate_limits: vec![
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
            ..record(6000, 200, "s1")
        };
        book.add(&limited, Some(0.1));
        let state = &book.rate_limits["client_oauth:3fa29c1b4d5e"];
        assert_eq!(state.status.as_deref(), Some("allowed"));
        assert_eq!(state.windows["5h"].utilization, Some(0.42));
        let json = serde_json::to_value(state).unwrap();
        assert_eq!(json["windows"]["5h"]["resets_at"], "2026-11-27T06:13:20Z");
        assert_eq!(
            json["headers"]["anthropic-ratelimit-unified-5h-utilization"],
            "0.42"
        );
    }

    #[test]
    fn windows_count_only_later_minutes() {
        let mut book = StatsBook::new("x".into());
        book.add(&record(6000, 200, "s"), Some(0.0));
        book.add(&record(9000, 200, "s"), Some(0.0));
        assert_eq!(book.window(Some(0)).totals.requests, 2);
        assert_eq!(book.window(Some(6060)).totals.requests, 1);
        assert_eq!(book.window(Some(9060)).totals.requests, 0);
    }

    #[test]
    fn only_the_most_recent_sessions_are_kept() {
        let mut book = StatsBook::new("x".into());
        for i in 0..(MAX_SESSIONS as i64 + 5) {
            book.add(&record(6000 + i, 200, &format!("session-{i}")), None);
        }
        assert_eq!(book.lifetime.by_session.len(), MAX_SESSIONS);
        assert!(!book.lifetime.by_session.contains_key("session-0"));
        assert!(book
            .lifetime
            .by_session
            .contains_key(&format!("session-{}", MAX_SESSIONS + 4)));
    }

    #[test]
    fn agents_and_projects_are_grouped_and_only_the_most_recent_kept() {
        let mut book = StatsBook::new("x".into());
        let attributed = |i: i64, agent: String, project: &str| RequestRecord {
            agent: Some(agent),
            parent_agent: Some("main".into()),
            project: Some(project.into()),
            ..record(6000 + i, 200, "s")
        };
        book.add(&attributed(0, "agent-0".into(), "billing-api"), Some(0.5));
        for i in 1..(MAX_SESSIONS as i64 + 5) {
            book.add(
                &attributed(i, format!("agent-{i}"), "billing-api"),
                Some(0.5),
            );
        }
        let newest = format!("agent-{}", MAX_SESSIONS + 4);
        let lifetime = &book.lifetime;
        assert_eq!(lifetime.by_agent.len(), MAX_SESSIONS);
        assert!(!lifetime.by_agent.contains_key("agent-0"));
        assert_eq!(lifetime.by_agent[&newest].requests, 1);
        assert_eq!(
            lifetime.by_project["billing-api"].requests,
            MAX_SESSIONS as u64 + 5
        );
        // The same bound holds in a window made of minute buckets.
        let window = book.window(Some(6000));
        assert_eq!(window.by_agent.len(), MAX_SESSIONS);
        assert!(window.by_agent.contains_key(&newest));
        assert!(book.agent_seen.len() <= 2 * MAX_SESSIONS);
        // A request without them is in neither group.
        book.add(&record(9000, 200, "s"), None);
        assert_eq!(book.lifetime.by_project.len(), 1);
    }

    #[test]
    fn old_buckets_are_pruned_after_eight_days() {
        let mut book = StatsBook::new("x".into());
        book.add(&record(0, 200, "s"), None);
        book.add(&record(9 * 86_400, 200, "s"), None);
        assert_eq!(book.minutes.len(), 1);
        assert_eq!(book.lifetime.totals.requests, 2);
    }

    #[test]
    fn unpriced_models_are_listed() {
        let mut book = StatsBook::new("x".into());
        book.add(&record(60, 200, "s"), None);
        assert_eq!(book.unpriced_models["claude-sonnet-4-5"], 1);
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
}
