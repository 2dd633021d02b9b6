//! The store: one row per finished request, kept in SQLite (embedded) or PostgreSQL (shared by a
//! fleet), written in batches off the request path, read back for `/usage` and `/stats` windows.
//!
//! - [`open`] opens (never overwrites) the database, migrates it and starts the writer thread.
//! - [`StoreHandle::submit`] hands rows to the writer without ever blocking.
//! - [`StoreHandle::usage`] and [`StoreHandle::window`] answer from the database (blocking: call
//!   them off the async runtime), so several sluices on one database see each other's rows.
//!
//! Alongside the raw rows the writer keeps 15-minute rollups (same transaction), so that long
//! windows are summed from pre-aggregated rows; 15 minutes keeps every time zone's offset exact.

mod db;
mod import;
mod pg_tls;
mod query;
mod rate_limits;
mod replay;
mod wiring;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use crate::metrics::counters::round_cost;
pub use crate::metrics::Counters;
pub use db::Target;
pub use import::{import_state_file, ImportSummary};
pub use query::{
    Format, Group, KeyValue, SessionUsage, StatsWindow, UsageQuery, UsageReport, UsageRow,
    DEFAULT_USAGE_ROWS, MAX_USAGE_ROWS,
};
pub use rate_limits::{load as load_rate_limits, RateLimitLog, MAX_RATE_LIMITS};
pub use replay::{poll_other_instances, replay, Numbered};
pub use wiring::{instance_name, options_from_settings, row_of, StoreSink};
pub use writer::{open, StoreHandle, StoreOptions, StoreStatus};

/// Longest text value kept in a row's key columns (model, session, …); longer ones are cut, so
/// that no client can put large values into the database.
pub const MAX_KEY_BYTES: usize = 256;

/// Outcomes that count as errors whatever the status (an error event inside a stream).
pub const ERROR_OUTCOMES: [&str; 1] = ["upstream_error_event"];

/// Outcomes that mean "a stream ended early", as the request path names them.
pub const INCOMPLETE_OUTCOMES: [&str; 5] = [
    "client_gone",
    "client_stalled",
    "upstream_cut",
    "idle_timeout",
    "shutdown",
];

/// A text column of a [`StoreRow`]. Rows of one client repeat the same texts (route, model,
/// credential, …): the store's sink gives consecutive rows the same shared text, so queued rows
/// hold one copy, and comparing two rows' texts (which the writer does for every row, to skip
/// binding a value again and to sum rows into rollups) is a pointer comparison.
#[derive(Clone, Default)]
pub struct Text(std::sync::Arc<str>);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The same text, quickly when it is shared.
impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text(text.into())
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text(text.into())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl rusqlite::ToSql for Text {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

/// One finished request. Text columns are `""` when absent. Never holds a secret, a body, a query
/// string or a header value other than these.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StoreRow {
    /// When the request finished, unix milliseconds.
    pub finished_ms: i64,
    /// Which sluice wrote it (several may share one database).
    pub instance: Text,
    pub route: Text,
    pub method: Text,
    pub status: u16,
    /// `completed`, `client_gone`, …, or sluice's own error kind.
    pub outcome: Text,
    /// The answer was an event stream.
    pub streamed: bool,
    pub model: Text,
    pub source: Text,
    /// `<source>:<fingerprint>`, never the secret.
    pub credential: Text,
    pub caller: Text,
    pub session: Text,
    pub agent: Text,
    pub parent_agent: Text,
    pub project: Text,
    /// The route's protocol (`anthropic`, `openai`, `gemini`, `none`).
    pub provider: Text,
    /// The agent or SDK that sent the request (a closed set of names).
    pub client: Text,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Cache writes with the 5-minute lifetime (all of them when the answer gives no split).
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub cache_read_tokens: u64,
    pub web_search_requests: u64,
    /// The part of `output_tokens` spent on reasoning.
    pub reasoning_output_tokens: u64,
    /// A stream that ended without its usage.
    pub usage_missing: bool,
    pub cost_usd: f64,
    pub ttfb_ms: Option<u64>,
    pub total_ms: u64,
    pub overhead_ms: Option<u64>,
}

impl StoreRow {
    pub fn is_error(&self) -> bool {
        self.status >= 400 || ERROR_OUTCOMES.contains(&self.outcome.as_str())
    }

    pub fn is_incomplete(&self) -> bool {
        INCOMPLETE_OUTCOMES.contains(&self.outcome.as_str())
    }

    /// The memory a queued row holds: the row and its texts.
    pub(crate) fn held_bytes(&self) -> usize {
        let texts = [
            &self.instance,
            &self.route,
            &self.method,
            &self.outcome,
            &self.model,
            &self.source,
            &self.credential,
            &self.caller,
            &self.session,
            &self.agent,
            &self.parent_agent,
            &self.project,
            &self.provider,
            &self.client,
        ];
        std::mem::size_of::<Self>() + texts.iter().map(|t| t.len()).sum::<usize>()
    }

    /// Cuts every text column to [`MAX_KEY_BYTES`].
    fn bound(&mut self) {
        for text in [
            &mut self.instance,
            &mut self.route,
            &mut self.method,
            &mut self.outcome,
            &mut self.model,
            &mut self.source,
            &mut self.credential,
            &mut self.caller,
            &mut self.session,
            &mut self.agent,
            &mut self.parent_agent,
            &mut self.project,
            &mut self.provider,
            &mut self.client,
        ] {
            if text.len() > MAX_KEY_BYTES {
                let mut end = MAX_KEY_BYTES;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                *text = Text::from(&text[..end]);
            }
        }
        if !self.cost_usd.is_finite() || self.cost_usd < 0.0 {
            self.cost_usd = 0.0;
        }
    }
}

impl StoreRow {
    /// What this row adds to every group it belongs to.
    pub fn counters(&self) -> Counters {
        Counters {
            requests: 1,
            errors: u64::from(self.is_error()),
            streamed: u64::from(self.streamed),
            incomplete: u64::from(self.is_incomplete()),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_creation_input_tokens: self
                .cache_write_5m_tokens
                .saturating_add(self.cache_write_1h_tokens),
            cache_read_input_tokens: self.cache_read_tokens,
            web_search_requests: self.web_search_requests,
            cost_usd: self.cost_usd,
            reasoning_output_tokens: self.reasoning_output_tokens,
            usage_missing: u64::from(self.usage_missing),
        }
    }
}

/// What went wrong in the store. Messages name the file or server and never hold a secret (a
/// PostgreSQL URL's password is never printed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store: cannot open {what}: {reason}")]
    Open { what: String, reason: String },
    #[error("store: {0}")]
    Database(String),
    #[error("store: {rows} rows could not be written before shutdown: {reason}")]
    FinalWrite { rows: usize, reason: String },
    #[error("store: state file import failed: {0}")]
    Import(String),
}

/// Answers a `/usage` query from an SQLite store file directly (`sluice report --db`), without
/// starting a writer. The file must exist: a typo never creates an empty database.
pub fn usage_from_file(
    path: &Path,
    usage: &UsageQuery,
    now: SystemTime,
) -> Result<UsageReport, StoreError> {
    if !path.is_file() {
        return Err(StoreError::Open {
            what: path.display().to_string(),
            reason: "no such file".into(),
        });
    }
    let mut db = db::Db::open_read_only(path)?;
    query::usage(&mut db, usage, now).map_err(StoreError::Database)
}

/// Where a relative store `path` lives: under `$STATE_DIRECTORY` (systemd) when that is set,
/// else under the working directory. Only the first of several colon-separated directories
/// systemd may pass is used.
pub fn resolve_path(path: &Path, state_directory: Option<&str>) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match state_directory
        .and_then(|dirs| dirs.split(':').next())
        .filter(|dir| !dir.is_empty())
    {
        Some(dir) => Path::new(dir).join(path),
        None => path.to_path_buf(),
    }
}

pub fn unix_ms(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::record::Outcome;

    #[test]
    fn error_and_incomplete_outcomes_match_the_request_paths_outcomes() {
        for outcome in Outcome::every_kind() {
            let row = StoreRow {
                outcome: outcome.as_str().into(),
                ..StoreRow::default()
            };
            assert_eq!(row.is_incomplete(), outcome.is_incomplete(), "{outcome:?}");
            assert_eq!(
                row.is_error(),
                outcome.is_error(),
                "{outcome:?} with status 0"
            );
        }
    }

    #[test]
    fn relative_paths_go_under_the_state_directory() {
        let rel = Path::new("sluice.db");
        assert_eq!(
            resolve_path(rel, Some("/var/lib/sluice:/other")),
            Path::new("/var/lib/sluice/sluice.db")
        );
        assert_eq!(resolve_path(rel, None), Path::new("sluice.db"));
        assert_eq!(resolve_path(rel, Some("")), Path::new("sluice.db"));
        assert_eq!(
            resolve_path(Path::new("/abs/x.db"), Some("/var/lib/sluice")),
            Path::new("/abs/x.db")
        );
    }

    #[test]
    fn long_keys_are_cut_on_a_char_boundary() {
        let mut row = StoreRow {
            model: "é".repeat(MAX_KEY_BYTES).into(),
            cost_usd: f64::NAN,
            ..StoreRow::default()
        };
        row.bound();
        assert!(row.model.len() <= MAX_KEY_BYTES);
        assert!(row.model.chars().all(|c| c == 'é'));
        assert_eq!(row.cost_usd, 0.0);
    }

    #[test]
    fn counters_saturate() {
        let mut c = Counters {
            input_tokens: u64::MAX,
            ..Counters::default()
        };
        c.merge(
            &StoreRow {
                input_tokens: 5,
                ..StoreRow::default()
            }
            .counters(),
        );
        assert_eq!(c.input_tokens, u64::MAX);
        assert_eq!(c.requests, 1);
    }
}
