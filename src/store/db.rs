//! The two databases behind one small set of operations: open (never overwriting what cannot be
//! read), migrate, write a batch with its rollups in one transaction, prune, and select.
//!
//! The SQL is shared: written with `?` placeholders (renumbered to `$n` for PostgreSQL), integer
//! columns are BIGINT on both, sums are read as floats (so that no sum can overflow a query).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::pg_tls::pg_err;
use super::{Counters, StoreError, StoreRow, Text, ERROR_OUTCOMES, INCOMPLETE_OUTCOMES};
use crate::metrics::counters::Amount;

/// Width of a rollup bucket.
pub const BUCKET_MS: i64 = 15 * 60 * 1000;
/// Width of a day rollup (UTC days).
pub const DAY_MS: i64 = 86_400_000;

/// The usage rollup tables and their bucket widths, coarsest first.
pub const USAGE_ROLLUPS: [(&str, i64); 2] = [("usage_1d", DAY_MS), ("usage_15m", BUCKET_MS)];
/// Per 15 minutes, each key column on its own (`dimension`, `value`): far fewer rows than
/// `usage_15m` for queries that touch one key column only.
pub const MARGINAL_ROLLUP: (&str, i64) = ("usage_by_15m", BUCKET_MS);

/// Which database the store lives in.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// An SQLite file (already resolved: see [`super::resolve_path`]).
    Sqlite(PathBuf),
    /// A `postgres://` URL (or key=value connection string).
    Postgres(String),
    /// An SQLite database in this process's memory (`[store] path = ""`), by name: the writer's
    /// and the reader's connections share it, and it is gone with the process.
    Memory(String),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Target {
    /// A name for logs and errors: the file, or the server without user or password.
    pub fn describe(&self) -> String {
        match self {
            Target::Sqlite(path) => path.display().to_string(),
            Target::Postgres(url) => describe_postgres(url),
            Target::Memory(_) => "memory".into(),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Target::Sqlite(_) => "sqlite",
            Target::Postgres(_) => "postgresql",
            Target::Memory(_) => "memory",
        }
    }

    /// A new in-memory database, named uniquely within the process.
    pub fn memory() -> Target {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Target::Memory(format!("/sluice-{}-{n}", std::process::id()))
    }
}

/// `postgresql database HOST:PORT/NAME` from a URL, leaving out the user and password; a
/// key=value connection string is not shown at all (it may hold a password anywhere).
fn describe_postgres(url: &str) -> String {
    let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    else {
        return "postgresql database".into();
    };
    let (head, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = head.split_once('/').unwrap_or((head, ""));
    let server = authority.rsplit_once('@').map_or(authority, |(_, s)| s);
    let socket = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("host="))
        .map(|h| format!(" (host {h})"))
        .unwrap_or_default();
    format!("postgresql database {server}/{path}{socket}")
}

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone)]
pub enum Param {
    Int(i64),
    Real(f64),
    Text(String),
    NullInt,
}

/// A column's type in a select's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Int,
    Real,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Int(i64),
    Real(f64),
    Text(String),
}

impl Cell {
    pub fn int(&self) -> i64 {
        match self {
            Cell::Int(v) => *v,
            Cell::Real(v) => *v as i64,
            Cell::Text(_) => 0,
        }
    }

    pub fn real(&self) -> f64 {
        match self {
            Cell::Int(v) => *v as f64,
            Cell::Real(v) => *v,
            Cell::Text(_) => 0.0,
        }
    }

    pub fn into_text(self) -> String {
        match self {
            Cell::Text(s) => s,
            Cell::Int(v) => v.to_string(),
            Cell::Real(v) => v.to_string(),
        }
    }
}

pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

/// How long an SQLite statement waits for another connection's lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_millis(500);
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
/// Serialises concurrent migrations of one PostgreSQL database (any constant will do).
const PG_MIGRATION_LOCK: i64 = 0x736c_7569_6365;

/// Versioned migrations; `{id}` is the dialect's auto-numbered primary key.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE requests (
    id {id},
    finished_ms BIGINT NOT NULL,
    instance TEXT NOT NULL DEFAULT '',
    route TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '',
    status BIGINT NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT '',
    streamed BIGINT NOT NULL DEFAULT 0,
    model TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    credential TEXT NOT NULL DEFAULT '',
    caller TEXT NOT NULL DEFAULT '',
    session TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL DEFAULT '',
    parent_agent TEXT NOT NULL DEFAULT '',
    project TEXT NOT NULL DEFAULT '',
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_5m_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens BIGINT NOT NULL DEFAULT 0,
    web_search_requests BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    ttfb_ms BIGINT,
    total_ms BIGINT NOT NULL DEFAULT 0,
    overhead_ms BIGINT
);
CREATE INDEX requests_by_time ON requests (finished_ms);
CREATE TABLE usage_15m (
    {usage_columns}
){without_rowid};
CREATE TABLE usage_1d (
    {usage_columns}
){without_rowid};
CREATE TABLE usage_by_15m (
    bucket BIGINT NOT NULL,
    dimension TEXT NOT NULL,
    value TEXT NOT NULL,
    {counters},
    PRIMARY KEY (bucket, dimension, value)
){without_rowid};
CREATE TABLE sessions_15m (
    bucket BIGINT NOT NULL,
    session TEXT NOT NULL,
    last_ms BIGINT NOT NULL,
    {counters},
    PRIMARY KEY (bucket, session)
){without_rowid};
CREATE TABLE store_batches (
    id TEXT PRIMARY KEY,
    committed_ms BIGINT NOT NULL
);
CREATE TABLE store_imports (
    digest TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    imported_ms BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE recent_15m (
    bucket BIGINT NOT NULL,
    dimension TEXT NOT NULL,
    value TEXT NOT NULL,
    last_ms BIGINT NOT NULL,
    {counters},
    PRIMARY KEY (bucket, dimension, value)
){without_rowid};
{recent_backfill}
"#,
    // The latest rate-limit state per credential (see `rate_limits.rs`).
    r#"
CREATE TABLE rate_limits (
    credential TEXT PRIMARY KEY,
    seen_ms BIGINT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX rate_limits_by_time ON rate_limits (seen_ms);
"#,
    r#"
CREATE TABLE recent_keys (
    dimension TEXT NOT NULL,
    value TEXT NOT NULL,
    last_ms BIGINT NOT NULL,
    PRIMARY KEY (dimension, value)
){without_rowid};
CREATE INDEX recent_keys_by_time ON recent_keys (dimension, last_ms);
INSERT INTO recent_keys (dimension, value, last_ms)
    SELECT dimension, value, MAX(last_ms) FROM recent_15m GROUP BY dimension, value;
INSERT INTO recent_keys (dimension, value, last_ms)
    SELECT 'session', session, MAX(last_ms) FROM sessions_15m GROUP BY session;
INSERT INTO recent_15m (bucket, dimension, value, last_ms, {counter_names})
    SELECT bucket, dimension, '', MAX(last_ms), {counter_sums} FROM recent_15m
    GROUP BY bucket, dimension;
INSERT INTO sessions_15m (bucket, session, last_ms, {counter_names})
    SELECT bucket, '', MAX(last_ms), {counter_sums} FROM sessions_15m GROUP BY bucket;
CREATE INDEX recent_15m_by_key ON recent_15m (dimension, value, bucket);
CREATE INDEX sessions_15m_by_key ON sessions_15m (session, bucket);
CREATE INDEX usage_by_15m_by_dimension ON usage_by_15m (dimension, bucket, value, requests);
CREATE TABLE recent_1d (
    bucket BIGINT NOT NULL,
    dimension TEXT NOT NULL,
    value TEXT NOT NULL,
    last_ms BIGINT NOT NULL,
    {counters},
    PRIMARY KEY (dimension, value, bucket)
){without_rowid};
CREATE INDEX recent_1d_by_bucket ON recent_1d (bucket);
INSERT INTO recent_1d (bucket, dimension, value, last_ms, {counter_names})
    SELECT bucket / {buckets_per_day}, dimension, value, MAX(last_ms), {counter_sums}
    FROM recent_15m GROUP BY bucket / {buckets_per_day}, dimension, value;
INSERT INTO recent_1d (bucket, dimension, value, last_ms, {counter_names})
    SELECT bucket / {buckets_per_day}, 'session', session, MAX(last_ms), {counter_sums}
    FROM sessions_15m GROUP BY bucket / {buckets_per_day}, session;
CREATE TABLE usage_by_1d (
    bucket BIGINT NOT NULL,
    dimension TEXT NOT NULL,
    value TEXT NOT NULL,
    {counters},
    PRIMARY KEY (dimension, value, bucket)
){without_rowid};
CREATE INDEX usage_by_1d_by_bucket ON usage_by_1d (bucket);
INSERT INTO usage_by_1d (bucket, dimension, value, {counter_names})
    SELECT bucket / {buckets_per_day}, dimension, value, {counter_sums}
    FROM usage_by_15m GROUP BY bucket / {buckets_per_day}, dimension, value;
"#,
    // Provider and client (`by_provider`, `by_client`), reasoning tokens and streams without
    // usage. Rows from before name no client; their provider is what their route's rows show:
    // before this version only `anthropic` routes read a model, so a route that has rows with
    // a model is `anthropic`, any other `none` (unrouted rows: none at all).
    r#"
ALTER TABLE requests ADD COLUMN provider TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN client TEXT NOT NULL DEFAULT '';
{new_counter_columns}
UPDATE requests SET provider = {provider_of_route};
INSERT INTO usage_by_15m (bucket, dimension, value, {counter_names})
    SELECT bucket, 'provider', {provider_of_route}, {counter_sums}
    FROM usage_15m GROUP BY 1, 3;
INSERT INTO usage_by_1d (bucket, dimension, value, {counter_names})
    SELECT bucket, 'provider', {provider_of_route}, {counter_sums}
    FROM usage_1d GROUP BY 1, 3;
INSERT INTO usage_by_15m (bucket, dimension, value, {counter_names})
    SELECT bucket, 'client', '', {counter_sums}
    FROM usage_by_15m WHERE dimension = 'route' GROUP BY bucket;
INSERT INTO usage_by_1d (bucket, dimension, value, {counter_names})
    SELECT bucket, 'client', '', {counter_sums}
    FROM usage_by_1d WHERE dimension = 'route' GROUP BY bucket;
"#,
];

/// How many counters the first migrations made columns for: later counters are added by the
/// migration that introduced them (so that the old migrations make the same tables as before).
const FIRST_COUNTERS: usize = 10;
/// The migration that added the counters after [`FIRST_COUNTERS`].
const NEW_COUNTERS_MIGRATION: usize = 4;
/// The tables that keep counter columns.
const COUNTER_TABLES: [&str; 7] = [
    "usage_15m",
    "usage_1d",
    "usage_by_15m",
    "usage_by_1d",
    "sessions_15m",
    "recent_15m",
    "recent_1d",
];

/// Per UTC day, each key column on its own, as [`MARGINAL_ROLLUP`] per 15 minutes: long windows
/// of one key column read a row per day and value.
pub const MARGINAL_DAYS: (&str, i64) = ("usage_by_1d", DAY_MS);
/// Per UTC day and key of [`RECENT_DIMENSIONS`] or session, as [`RECENT_ROLLUP`] and
/// `sessions_15m` per 15 minutes.
pub const RECENT_DAYS: (&str, i64) = ("recent_1d", DAY_MS);

/// Per key of [`RECENT_DIMENSIONS`] and session: when it was last active (unix ms), indexed by
/// that time, so that `/stats` reads the most recently active keys without sorting them all.
pub const RECENT_KEYS: &str = "recent_keys";
/// The dimension name of sessions in [`RECENT_KEYS`].
pub const SESSION_DIMENSION: &str = "session";
/// In [`RECENT_ROLLUP`] and `sessions_15m`, the row of each bucket (and dimension) under this
/// empty key sums every key's: what all keys of a window made, read without reading each.
pub const ALL_KEYS: &str = "";

/// Per 15 minutes and key of a column clients can grow without limit (credential, project,
/// agent): when it was last active, to the millisecond, and its counters. `/stats` keeps the
/// most recently active keys of a window from it.
pub const RECENT_ROLLUP: &str = "recent_15m";
/// The columns [`RECENT_ROLLUP`] keeps keys of.
pub const RECENT_DIMENSIONS: [&str; 3] = ["credential", "project", "agent"];

/// The counter columns of the rollup tables, in [`Counters::FIELDS`] order.
pub const COUNTER_COLUMNS: [&str; Counters::FIELDS.len()] = [
    "requests",
    "errors",
    "streamed",
    "incomplete",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "cost_usd",
    "reasoning_output_tokens",
    "usage_missing",
];

/// Key columns kept only in the marginal rollups ([`MARGINAL_ROLLUP`], [`MARGINAL_DAYS`]):
/// each takes few values (closed sets), and `/usage` groups or filters by one of them on its
/// own from the marginal rollups, by them with another column from the raw rows.
pub const MARGINAL_ONLY_DIMENSIONS: [&str; 2] = ["provider", "client"];

/// Key columns of `usage_15m` after `bucket`.
pub const ROLLUP_DIMENSIONS: [&str; 7] = [
    "route",
    "model",
    "source",
    "credential",
    "caller",
    "project",
    "status",
];

const ROW_COLUMNS: [&str; 29] = [
    "finished_ms",
    "instance",
    "route",
    "method",
    "status",
    "outcome",
    "streamed",
    "model",
    "source",
    "credential",
    "caller",
    "session",
    "agent",
    "parent_agent",
    "project",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "cost_usd",
    "ttfb_ms",
    "total_ms",
    "overhead_ms",
    "provider",
    "client",
    "reasoning_output_tokens",
    "usage_missing",
];

/// Rollup buckets deleted per retention step.
const PRUNE_BUCKETS: usize = 16;
/// Rollup rows per upsert statement (20 parameters each).
const UPSERT_CHUNK: usize = 100;
/// Rows per multi-row INSERT statement (29 parameters each).
const INSERT_CHUNK: usize = 100;

fn migration_sql(index: usize, postgres: bool) -> String {
    let counter_columns = if index < NEW_COUNTERS_MIGRATION {
        &COUNTER_COLUMNS[..FIRST_COUNTERS]
    } else {
        &COUNTER_COLUMNS[..]
    };
    let column_type = |c: &str| {
        if c == "cost_usd" {
            "DOUBLE PRECISION"
        } else {
            "BIGINT"
        }
    };
    let counters = counter_columns
        .iter()
        .map(|c| format!("{c} {} NOT NULL DEFAULT 0", column_type(c)))
        .collect::<Vec<_>>()
        .join(",\n    ");
    let usage_columns = format!(
        "bucket BIGINT NOT NULL,\n    {},\n    status BIGINT NOT NULL,\n    {counters},\n    \
         PRIMARY KEY (bucket, {})",
        ROLLUP_DIMENSIONS[..6]
            .iter()
            .map(|d| format!("{d} TEXT NOT NULL"))
            .collect::<Vec<_>>()
            .join(",\n    "),
        ROLLUP_DIMENSIONS.join(", ")
    );
    // Stores made before the recency rollup get it from their raw rows.
    let recent_backfill = RECENT_DIMENSIONS
        .iter()
        .map(|dim| {
            format!(
                "INSERT INTO {RECENT_ROLLUP} (bucket, dimension, value, last_ms, {}) \
                 SELECT finished_ms / {BUCKET_MS}, '{dim}', {dim}, MAX(finished_ms), {} \
                 FROM requests WHERE {dim} <> '' GROUP BY finished_ms / {BUCKET_MS}, {dim};",
                counter_columns.join(", "),
                counter_columns
                    .iter()
                    .map(|c| format!("SUM({})", raw_counter(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let counter_sums = counter_columns
        .iter()
        .map(|c| format!("SUM({c})"))
        .collect::<Vec<_>>()
        .join(", ");
    let new_counter_columns = ["requests"]
        .iter()
        .chain(COUNTER_TABLES.iter())
        .flat_map(|table| {
            COUNTER_COLUMNS[FIRST_COUNTERS..].iter().map(move |c| {
                format!(
                    "ALTER TABLE {table} ADD COLUMN {c} {} NOT NULL DEFAULT 0;",
                    column_type(c)
                )
            })
        })
        .collect::<Vec<_>>()
        .join("\n");
    let provider_of_route = "CASE WHEN route = '' THEN '' WHEN route IN \
         (SELECT DISTINCT route FROM usage_1d WHERE model <> '') THEN 'anthropic' ELSE 'none' END";
    MIGRATIONS[index]
        .replace("{recent_backfill}", &recent_backfill)
        .replace("{new_counter_columns}", &new_counter_columns)
        .replace("{provider_of_route}", provider_of_route)
        .replace("{counter_names}", &counter_columns.join(", "))
        .replace("{counter_sums}", &counter_sums)
        .replace("{buckets_per_day}", &(DAY_MS / BUCKET_MS).to_string())
        .replace("{usage_columns}", &usage_columns)
        // SQLite: the primary key is the table (no second copy of the keys in an index).
        .replace(
            "{without_rowid}",
            if postgres { "" } else { " WITHOUT ROWID" },
        )
        .replace(
            "{id}",
            if postgres {
                "BIGSERIAL PRIMARY KEY"
            } else {
                "INTEGER PRIMARY KEY"
            },
        )
        .replace("{counters}", &counters)
}

/// `?` placeholders renumbered as `$1, $2, …` for PostgreSQL.
fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn saturating_sum(table: &str, column: &str) -> String {
    format!(
        "{column} = CASE WHEN {table}.{column} > 9223372036854775807 - excluded.{column} \
         THEN 9223372036854775807 ELSE {table}.{column} + excluded.{column} END"
    )
}

/// An upsert of `rows` rows (whose keys must differ) adding to the counters of existing ones.
fn upsert_sql(
    table: &str,
    keys: &[&str],
    extra: &[(&str, &str)],
    counters: bool,
    rows: usize,
) -> String {
    let counter_columns: &[&str] = if counters { &COUNTER_COLUMNS } else { &[] };
    let mut columns: Vec<&str> = keys.to_vec();
    columns.extend(extra.iter().map(|(c, _)| *c));
    columns.extend(counter_columns);
    let one = format!("({})", vec!["?"; columns.len()].join(", "));
    let placeholders = vec![one; rows].join(", ");
    let mut sets: Vec<String> = extra
        .iter()
        .map(|(c, rule)| format!("{c} = {}", rule.replace("{t}", table)))
        .collect();
    for &c in counter_columns {
        if c == "cost_usd" {
            sets.push(format!("cost_usd = {table}.cost_usd + excluded.cost_usd"));
        } else {
            sets.push(saturating_sum(table, c));
        }
    }
    format!(
        "INSERT INTO {table} ({}) VALUES {placeholders} ON CONFLICT ({}) DO UPDATE SET {}",
        columns.join(", "),
        keys.join(", "),
        sets.join(", ")
    )
}

fn counter_params(counters: &Counters) -> impl Iterator<Item = Param> {
    counters.amounts().into_iter().map(|amount| match amount {
        Amount::Count(n) => Param::Int(clamp(n)),
        Amount::Usd(usd) => Param::Real(usd),
    })
}

type RollupKey<'a> = (i64, [Cow<'a, str>; 6], i64);
type RecentKey<'a> = (i64, &'static str, Cow<'a, str>);

/// What one batch adds to the rollup tables. Keys borrow from the rows they come from, so that
/// adding a row allocates nothing when its keys were seen before in the batch.
#[derive(Default)]
pub struct Rollups<'a> {
    usage: BTreeMap<RollupKey<'a>, Counters>,
    days: BTreeMap<RollupKey<'a>, Counters>,
    marginals: BTreeMap<RecentKey<'a>, Counters>,
    /// As `marginals`, per day.
    marginal_days: BTreeMap<RecentKey<'a>, Counters>,
    /// (bucket, session) → (last finished, counters); under [`ALL_KEYS`] all sessions'.
    sessions: BTreeMap<(i64, Cow<'a, str>), (i64, Counters)>,
    /// (bucket, dimension, key) → (last finished, counters), for [`RECENT_ROLLUP`]; under
    /// [`ALL_KEYS`] all keys'.
    recent: BTreeMap<RecentKey<'a>, (i64, Counters)>,
    /// As `recent` and `sessions` (dimension [`SESSION_DIMENSION`]), per day.
    recent_days: BTreeMap<RecentKey<'a>, (i64, Counters)>,
}

/// Adds to an entry, keeping the latest time.
fn add_latest<K: Ord>(
    map: &mut BTreeMap<K, (i64, Counters)>,
    key: K,
    last_ms: i64,
    counters: &Counters,
) {
    let entry = map.entry(key).or_insert((last_ms, Counters::default()));
    entry.0 = entry.0.max(last_ms);
    entry.1.merge(counters);
}

/// The day of a 15-minute bucket.
fn day_of(bucket: i64) -> i64 {
    (bucket * BUCKET_MS).div_euclid(DAY_MS)
}

/// Every key column of a row, with its bucket: rows that agree on all of them add to the same
/// rollup rows, so a batch is summed per distinct key first.
#[derive(PartialEq, Eq, Hash)]
struct RowKeys<'a> {
    bucket: i64,
    status: u16,
    /// route, model, source, credential, caller, project, agent, session, provider, client.
    text: [&'a str; 10],
}

impl RowKeys<'_> {
    /// `==`, without reading the texts a row shares with the one before it (see [`Text`]).
    fn same_as(&self, other: &RowKeys<'_>) -> bool {
        self.bucket == other.bucket
            && self.status == other.status
            && (self.text.iter().zip(&other.text)).all(|(a, b)| std::ptr::eq(*a, *b) || a == b)
    }
}

/// Adds a run of rows with the same keys to the batch's sums.
fn add_run<'a>(
    groups: &mut std::collections::HashMap<RowKeys<'a>, (i64, Counters)>,
    (keys, last_ms, counters): (RowKeys<'a>, i64, Counters),
) {
    let entry = groups.entry(keys).or_insert((last_ms, Counters::default()));
    entry.0 = entry.0.max(last_ms);
    entry.1.merge(&counters);
}

impl<'a> Rollups<'a> {
    pub fn of_rows(rows: &'a [StoreRow]) -> Rollups<'a> {
        let mut groups: std::collections::HashMap<RowKeys<'a>, (i64, Counters)> =
            std::collections::HashMap::new();
        // Rows of one client often come in a run: those add to the run's sums without hashing.
        let mut run: Option<(RowKeys<'a>, i64, Counters)> = None;
        for row in rows {
            let keys = RowKeys {
                bucket: row.finished_ms.div_euclid(BUCKET_MS),
                status: row.status,
                text: [
                    &row.route,
                    &row.model,
                    &row.source,
                    &row.credential,
                    &row.caller,
                    &row.project,
                    &row.agent,
                    &row.session,
                    &row.provider,
                    &row.client,
                ],
            };
            match &mut run {
                Some((same, last_ms, counters)) if same.same_as(&keys) => {
                    *last_ms = (*last_ms).max(row.finished_ms);
                    counters.merge(&row.counters());
                }
                _ => {
                    if let Some(ended) = run.take() {
                        add_run(&mut groups, ended);
                    }
                    run = Some((keys, row.finished_ms, row.counters()));
                }
            }
        }
        if let Some(ended) = run {
            add_run(&mut groups, ended);
        }
        let mut rollups = Rollups::default();
        for (keys, (last_ms, counters)) in groups {
            let [route, model, source, credential, caller, project, agent, session, provider, client] =
                keys.text.map(Cow::Borrowed);
            let bucket = keys.bucket;
            for (dimension, key) in
                RECENT_DIMENSIONS
                    .into_iter()
                    .zip([credential.clone(), project.clone(), agent])
            {
                rollups.add_recent_of(bucket, dimension, key, last_ms, &counters);
            }
            rollups.add_usage_of(
                bucket,
                [route, model, source, credential, caller, project],
                [provider, client],
                i64::from(keys.status),
                &counters,
            );
            rollups.add_session_of(bucket, session, last_ms, &counters);
        }
        rollups
    }

    /// Each key's latest activity in these additions, for [`RECENT_KEYS`].
    fn latest(&self) -> BTreeMap<(&'static str, &str), i64> {
        let mut latest = BTreeMap::new();
        for ((_, dimension, key), (last_ms, _)) in &self.recent_days {
            if key != ALL_KEYS {
                let at = latest.entry((*dimension, key.as_ref())).or_insert(*last_ms);
                *at = (*at).max(*last_ms);
            }
        }
        latest
    }

    /// Adds to the key's recency row of `bucket` (nothing for an empty key).
    pub fn add_recent(
        &mut self,
        bucket: i64,
        dimension: &'static str,
        key: &str,
        last_ms: i64,
        counters: &Counters,
    ) {
        self.add_recent_of(
            bucket,
            dimension,
            Cow::Owned(key.to_string()),
            last_ms,
            counters,
        );
    }

    fn add_recent_of(
        &mut self,
        bucket: i64,
        dimension: &'static str,
        key: Cow<'a, str>,
        last_ms: i64,
        counters: &Counters,
    ) {
        if key.is_empty() {
            return;
        }
        let day = day_of(bucket);
        for key in [key, Cow::Borrowed(ALL_KEYS)] {
            add_latest(
                &mut self.recent_days,
                (day, dimension, key.clone()),
                last_ms,
                counters,
            );
            add_latest(
                &mut self.recent,
                (bucket, dimension, key),
                last_ms,
                counters,
            );
        }
    }

    /// Adds to a session's row of `bucket` (nothing for an empty session); the later `last_ms`
    /// is kept.
    pub fn add_session(&mut self, bucket: i64, session: &str, last_ms: i64, counters: &Counters) {
        self.add_session_of(bucket, Cow::Owned(session.to_string()), last_ms, counters);
    }

    fn add_session_of(
        &mut self,
        bucket: i64,
        session: Cow<'a, str>,
        last_ms: i64,
        counters: &Counters,
    ) {
        if session.is_empty() {
            return;
        }
        let day = day_of(bucket);
        for session in [session, Cow::Borrowed(ALL_KEYS)] {
            add_latest(
                &mut self.recent_days,
                (day, SESSION_DIMENSION, session.clone()),
                last_ms,
                counters,
            );
            add_latest(&mut self.sessions, (bucket, session), last_ms, counters);
        }
    }

    /// Adds to the 15-minute `bucket` and to its day (with no provider or client).
    pub fn add_usage(&mut self, bucket: i64, keys: [String; 6], status: i64, counters: &Counters) {
        self.add_usage_of(
            bucket,
            keys.map(Cow::Owned),
            [Cow::Borrowed(""), Cow::Borrowed("")],
            status,
            counters,
        );
    }

    fn add_usage_of(
        &mut self,
        bucket: i64,
        keys: [Cow<'a, str>; 6],
        marginal_only: [Cow<'a, str>; 2],
        status: i64,
        counters: &Counters,
    ) {
        let day = day_of(bucket);
        let values = keys
            .iter()
            .cloned()
            .chain(std::iter::once(Cow::Owned(status.to_string())))
            .chain(marginal_only);
        let dimensions = ROLLUP_DIMENSIONS
            .into_iter()
            .chain(MARGINAL_ONLY_DIMENSIONS);
        for (dimension, value) in dimensions.zip(values) {
            self.marginal_days
                .entry((day, dimension, value.clone()))
                .or_default()
                .merge(counters);
            self.marginals
                .entry((bucket, dimension, value))
                .or_default()
                .merge(counters);
        }
        self.days
            .entry((day, keys.clone(), status))
            .or_default()
            .merge(counters);
        self.usage
            .entry((bucket, keys, status))
            .or_default()
            .merge(counters);
    }
}

fn row_params(row: &StoreRow, out: &mut Vec<Param>) {
    let text = |s: &Text| Param::Text(s.to_string());
    let opt = |v: Option<u64>| v.map_or(Param::NullInt, |v| Param::Int(clamp(v)));
    out.extend([
        Param::Int(row.finished_ms),
        text(&row.instance),
        text(&row.route),
        text(&row.method),
        Param::Int(i64::from(row.status)),
        text(&row.outcome),
        Param::Int(i64::from(row.streamed)),
        text(&row.model),
        text(&row.source),
        text(&row.credential),
        text(&row.caller),
        text(&row.session),
        text(&row.agent),
        text(&row.parent_agent),
        text(&row.project),
        Param::Int(clamp(row.input_tokens)),
        Param::Int(clamp(row.output_tokens)),
        Param::Int(clamp(row.cache_write_5m_tokens)),
        Param::Int(clamp(row.cache_write_1h_tokens)),
        Param::Int(clamp(row.cache_read_tokens)),
        Param::Int(clamp(row.web_search_requests)),
        Param::Real(row.cost_usd),
        opt(row.ttfb_ms),
        Param::Int(clamp(row.total_ms)),
        opt(row.overhead_ms),
        text(&row.provider),
        text(&row.client),
        Param::Int(clamp(row.reasoning_output_tokens)),
        Param::Int(i64::from(row.usage_missing)),
    ]);
}

/// Rows to add to one rollup table: the key columns, then `extra` columns with the rule that
/// merges each with the stored value, then (with `counters`) the counter columns.
struct Upsert {
    table: &'static str,
    keys: &'static [&'static str],
    extra: &'static [(&'static str, &'static str)],
    counters: bool,
    rows: Vec<Vec<Param>>,
}

impl Upsert {
    fn sql(&self, rows: usize) -> String {
        upsert_sql(self.table, self.keys, self.extra, self.counters, rows)
    }
}

/// The later of two activity times wins.
const LATEST: &[(&str, &str)] = &[(
    "last_ms",
    "CASE WHEN excluded.last_ms > {t}.last_ms THEN excluded.last_ms ELSE {t}.last_ms END",
)];

const USAGE_KEYS: [&str; 8] = [
    "bucket",
    "route",
    "model",
    "source",
    "credential",
    "caller",
    "project",
    "status",
];

/// What `rollups` adds, handed to `each` one table at a time (each table's parameters are
/// built only when its turn comes, so a batch of new keys never has them all in memory at
/// once). Keys in sorted order (BTreeMap), so that two writers on one database lock rows in the
/// same order and never deadlock.
fn rollup_upserts(
    rollups: &Rollups,
    mut each: impl FnMut(Upsert) -> Result<(), String>,
) -> Result<(), String> {
    let text = |s: &str| Param::Text(s.to_string());
    let with_counters = |mut params: Vec<Param>, counters: &Counters| {
        params.extend(counter_params(counters));
        params
    };
    let usage = |additions: &BTreeMap<RollupKey, Counters>| -> Vec<Vec<Param>> {
        additions
            .iter()
            .map(|((bucket, keys, status), counters)| {
                let mut params = vec![Param::Int(*bucket)];
                params.extend(keys.iter().map(|k| text(k)));
                params.push(Param::Int(*status));
                with_counters(params, counters)
            })
            .collect()
    };
    let usage_table = |table, rows| Upsert {
        table,
        keys: &USAGE_KEYS,
        extra: &[],
        counters: true,
        rows,
    };
    each(usage_table("usage_1d", usage(&rollups.days)))?;
    each(usage_table("usage_15m", usage(&rollups.usage)))?;
    // Per (bucket, dimension, value): the marginal rollups, and the recency ones, which also
    // keep the latest finish.
    let marginal_table = |table, additions: &BTreeMap<RecentKey, Counters>| Upsert {
        table,
        keys: &["bucket", "dimension", "value"],
        extra: &[],
        counters: true,
        rows: additions
            .iter()
            .map(|((bucket, dimension, value), counters)| {
                let keys = vec![Param::Int(*bucket), text(dimension), text(value)];
                with_counters(keys, counters)
            })
            .collect(),
    };
    let recent_table = |table, additions: &BTreeMap<RecentKey, (i64, Counters)>| Upsert {
        table,
        keys: &["bucket", "dimension", "value"],
        extra: LATEST,
        counters: true,
        rows: additions
            .iter()
            .map(|((bucket, dimension, value), (last_ms, counters))| {
                let keys = vec![
                    Param::Int(*bucket),
                    text(dimension),
                    text(value),
                    Param::Int(*last_ms),
                ];
                with_counters(keys, counters)
            })
            .collect(),
    };
    each(marginal_table(MARGINAL_ROLLUP.0, &rollups.marginals))?;
    each(marginal_table(MARGINAL_DAYS.0, &rollups.marginal_days))?;
    each(recent_table(RECENT_DAYS.0, &rollups.recent_days))?;
    each(recent_table(RECENT_ROLLUP, &rollups.recent))?;
    each(Upsert {
        table: "sessions_15m",
        keys: &["bucket", "session"],
        extra: LATEST,
        counters: true,
        rows: rollups
            .sessions
            .iter()
            .map(|((bucket, session), (last_ms, counters))| {
                let keys = vec![Param::Int(*bucket), text(session), Param::Int(*last_ms)];
                with_counters(keys, counters)
            })
            .collect(),
    })?;
    each(Upsert {
        table: RECENT_KEYS,
        keys: &["dimension", "value"],
        extra: LATEST,
        counters: false,
        rows: rollups
            .latest()
            .into_iter()
            .map(|((dimension, value), last_ms)| {
                vec![text(dimension), text(value), Param::Int(last_ms)]
            })
            .collect(),
    })?;
    Ok(())
}

/// Pages of WAL after which a commit checkpoints them into the database file.
const WAL_CHECKPOINT_PAGES: u32 = 100;

/// How a long write gives the core away: after every `every` of work, between two pieces of
/// the transaction, the writer sleeps for a moment, so that an HTTP worker sharing its core
/// runs at once instead of after the writer's slice or the next timer tick. It sleeps rather
/// than calling `sched_yield`: a thread that yields is charged as if it had used its whole
/// slice, so a writer yielding often falls behind its rows (tried: rows were dropped), while one
/// that sleeps keeps its claim to the CPU.
#[derive(Debug)]
pub struct Pacing {
    every: Option<Duration>,
    since: Option<Instant>,
}

impl Pacing {
    /// Never pauses.
    pub fn off() -> Pacing {
        Pacing {
            every: None,
            since: None,
        }
    }

    /// Pauses after each `every` of work, counted from the first step.
    pub fn every(every: Duration) -> Pacing {
        Pacing {
            every: Some(every),
            since: None,
        }
    }

    /// Called between two pieces of work: pauses if `every` has passed since the last pause.
    pub fn step(&mut self) {
        if self.due(Instant::now()) {
            std::thread::sleep(PACING_PAUSE);
            self.since = Some(Instant::now());
        }
    }

    /// Whether a step at `now` pauses.
    fn due(&mut self, now: Instant) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        match self.since {
            None => {
                self.since = Some(now);
                false
            }
            Some(since) => now.saturating_duration_since(since) >= every,
        }
    }
}

/// A pause: the shortest sleep the kernel gives (the timer's slack, ~50 µs, makes it longer).
const PACING_PAUSE: Duration = Duration::from_micros(1);

/// Raw rows per INSERT statement on SQLite: one statement runs for many rows, its values bound
/// in place.
const SQLITE_INSERT_ROWS: usize = 32;

/// The SQL of a statement made once per process (`table` and `rows` name it).
fn cached_sql(table: &'static str, rows: usize, build: impl FnOnce() -> String) -> &'static str {
    static MADE: Mutex<BTreeMap<(&str, usize), &str>> = Mutex::new(BTreeMap::new());
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    made.entry((table, rows))
        .or_insert_with(|| Box::leak(build().into_boxed_str()))
}

/// Runs `insert` (made by [`insert_sql`] for `rows.len()` rows) for `rows`. `previous`: the rows
/// the same statement was last run for, in this transaction. SQLite keeps a statement's bindings
/// after it runs, so a value equal to the one in the same place last time is not bound again:
/// most of a row (instance, route, method, model, source, …) repeats the rows before it, and
/// binding a text makes SQLite copy it.
fn insert_rows(
    insert: &mut rusqlite::CachedStatement<'_>,
    rows: &[StoreRow],
    previous: Option<&[StoreRow]>,
) -> rusqlite::Result<()> {
    let mut at = 0;
    for (n, row) in rows.iter().enumerate() {
        let last = previous.and_then(|p| p.get(n));
        // Binds `value` (made from `row.field`) unless `field` is what was bound there before.
        macro_rules! bind {
            ($field:ident, $value:expr) => {{
                at += 1;
                if last.map_or(true, |last| last.$field != row.$field) {
                    insert.raw_bind_parameter(at, $value)?;
                }
            }};
        }
        bind!(finished_ms, row.finished_ms);
        bind!(instance, &row.instance);
        bind!(route, &row.route);
        bind!(method, &row.method);
        bind!(status, i64::from(row.status));
        bind!(outcome, &row.outcome);
        bind!(streamed, i64::from(row.streamed));
        bind!(model, &row.model);
        bind!(source, &row.source);
        bind!(credential, &row.credential);
        bind!(caller, &row.caller);
        bind!(session, &row.session);
        bind!(agent, &row.agent);
        bind!(parent_agent, &row.parent_agent);
        bind!(project, &row.project);
        bind!(input_tokens, clamp(row.input_tokens));
        bind!(output_tokens, clamp(row.output_tokens));
        bind!(cache_write_5m_tokens, clamp(row.cache_write_5m_tokens));
        bind!(cache_write_1h_tokens, clamp(row.cache_write_1h_tokens));
        bind!(cache_read_tokens, clamp(row.cache_read_tokens));
        bind!(web_search_requests, clamp(row.web_search_requests));
        bind!(cost_usd, row.cost_usd);
        bind!(ttfb_ms, row.ttfb_ms.map(clamp));
        bind!(total_ms, clamp(row.total_ms));
        bind!(overhead_ms, row.overhead_ms.map(clamp));
        bind!(provider, &row.provider);
        bind!(client, &row.client);
        bind!(reasoning_output_tokens, clamp(row.reasoning_output_tokens));
        bind!(usage_missing, i64::from(row.usage_missing));
    }
    debug_assert_eq!(at, rows.len() * ROW_COLUMNS.len());
    insert.raw_execute().map(|_| ())
}

fn insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; ROW_COLUMNS.len()].join(", "));
    format!(
        "INSERT INTO requests ({}) VALUES {}",
        ROW_COLUMNS.join(", "),
        vec![one; rows].join(", ")
    )
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Param::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Param::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Param::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Param::NullInt => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

fn pg_params(params: &[Param]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
            match p {
                Param::Int(v) => Box::new(*v),
                Param::Real(v) => Box::new(*v),
                Param::Text(v) => Box::new(v.clone()),
                Param::NullInt => Box::new(None::<i64>),
            }
        })
        .collect()
}

fn sqlite_err(err: rusqlite::Error) -> String {
    err.to_string()
}

impl Db {
    /// Opens the database; with `migrate`, creates or upgrades its schema. An SQLite file that is
    /// not a database is left exactly as it is and reported.
    pub fn open(target: &Target, migrate: bool) -> Result<Db, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            what: target.describe(),
            reason,
        };
        let mut db = match target {
            Target::Sqlite(path) => Db::Sqlite(open_sqlite(path).map_err(open_error)?),
            Target::Memory(name) => Db::Sqlite(open_memory(name).map_err(open_error)?),
            Target::Postgres(url) => {
                Db::Postgres(Box::new(super::pg_tls::connect(url).map_err(open_error)?))
            }
        };
        if migrate {
            db.migrate().map_err(open_error)?;
        }
        Ok(db)
    }

    /// Opens an SQLite store file for reading only: nothing about the file is changed, and a
    /// file that holds no store is reported as such.
    pub fn open_read_only(path: &Path) -> Result<Db, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            what: path.display().to_string(),
            reason,
        };
        check_sqlite_header(path).map_err(open_error)?;
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(sqlite_err(e)))?;
        conn.busy_timeout(SQLITE_BUSY_TIMEOUT)
            .map_err(|e| open_error(sqlite_err(e)))?;
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'store_schema'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| open_error(sqlite_err(e)))?;
        if tables == 0 {
            return Err(open_error("it holds no sluice store".into()));
        }
        Ok(Db::Sqlite(conn))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    fn migrate(&mut self) -> Result<(), String> {
        let known = MIGRATIONS.len() as i64;
        match self {
            Db::Sqlite(conn) => {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(sqlite_err)?;
                tx.execute_batch(
                    "CREATE TABLE IF NOT EXISTS store_schema (version BIGINT NOT NULL)",
                )
                .map_err(sqlite_err)?;
                let version: i64 = tx
                    .query_row(
                        "SELECT COALESCE(MAX(version), 0) FROM store_schema",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(sqlite_err)?;
                check_version(version, known)?;
                for index in version as usize..MIGRATIONS.len() {
                    tx.execute_batch(&migration_sql(index, false))
                        .map_err(sqlite_err)?;
                    tx.execute(
                        "INSERT INTO store_schema (version) VALUES (?1)",
                        [index as i64 + 1],
                    )
                    .map_err(sqlite_err)?;
                }
                tx.commit().map_err(sqlite_err)
            }
            Db::Postgres(client) => {
                let mut tx = client.transaction().map_err(pg_err)?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MIGRATION_LOCK])
                    .map_err(pg_err)?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS store_schema (version BIGINT NOT NULL)",
                )
                .map_err(pg_err)?;
                let version: i64 = tx
                    .query_one(
                        "SELECT COALESCE(MAX(version), 0)::BIGINT FROM store_schema",
                        &[],
                    )
                    .map_err(pg_err)?
                    .get(0);
                check_version(version, known)?;
                for index in version as usize..MIGRATIONS.len() {
                    tx.batch_execute(&migration_sql(index, true))
                        .map_err(pg_err)?;
                    tx.execute(
                        "INSERT INTO store_schema (version) VALUES ($1)",
                        &[&(index as i64 + 1)],
                    )
                    .map_err(pg_err)?;
                }
                tx.commit().map_err(pg_err)
            }
        }
    }

    /// Writes `rows` and what they add to the rollups in one transaction, pausing as `pacing`
    /// says between its pieces. The batch is recorded under `batch_id` in the same transaction:
    /// a commit whose answer was lost (connection cut) can then be told from one that did not
    /// happen.
    pub fn write_batch(
        &mut self,
        rows: &[StoreRow],
        batch_id: &str,
        pacing: &mut Pacing,
    ) -> Result<(), String> {
        let rollups = Rollups::of_rows(rows);
        let record = (
            "INSERT INTO store_batches (id, committed_ms) VALUES (?, ?)".to_string(),
            vec![
                Param::Text(batch_id.to_string()),
                Param::Int(super::unix_ms(std::time::SystemTime::now())),
            ],
        );
        self.write_with(rows, &rollups, vec![record], pacing)
    }

    /// Whether the batch `batch_id` was committed.
    pub fn batch_committed(&mut self, batch_id: &str) -> Result<bool, String> {
        let found = self.select(
            "SELECT COUNT(*) FROM store_batches WHERE id = ?",
            &[Param::Text(batch_id.to_string())],
            &[Col::Int],
        )?;
        Ok(found.first().is_some_and(|r| r[0].int() > 0))
    }

    /// Writes raw rows, rollup additions (which need not come from those rows: an import adds
    /// rollups alone) and `statements` in one transaction, pausing as `pacing` says between its
    /// pieces.
    pub fn write_with(
        &mut self,
        rows: &[StoreRow],
        rollups: &Rollups,
        statements: Vec<(String, Vec<Param>)>,
        pacing: &mut Pacing,
    ) -> Result<(), String> {
        match self {
            // One prepared statement per table, run once per row or rollup entry: SQLite runs in
            // this process, so many small statements cost less than building and parsing
            // large ones.
            Db::Sqlite(conn) => {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(sqlite_err)?;
                for (sql, params) in &statements {
                    tx.prepare_cached(sql)
                        .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(params)))
                        .map_err(sqlite_err)?;
                }
                let mut chunks = rows.chunks_exact(SQLITE_INSERT_ROWS);
                let mut many = tx
                    .prepare_cached(cached_sql("requests", SQLITE_INSERT_ROWS, || {
                        insert_sql(SQLITE_INSERT_ROWS)
                    }))
                    .map_err(sqlite_err)?;
                // A statement taken from the cache has no bindings: the first run binds all.
                let mut previous = None;
                for chunk in chunks.by_ref() {
                    insert_rows(&mut many, chunk, previous).map_err(sqlite_err)?;
                    previous = Some(chunk);
                    pacing.step();
                }
                drop(many);
                let mut insert = tx
                    .prepare_cached(cached_sql("requests", 1, || insert_sql(1)))
                    .map_err(sqlite_err)?;
                let mut previous = None;
                for row in chunks.remainder() {
                    let row = std::slice::from_ref(row);
                    insert_rows(&mut insert, row, previous).map_err(sqlite_err)?;
                    previous = Some(row);
                }
                drop(insert);
                pacing.step();
                rollup_upserts(rollups, |upsert| {
                    let sql = cached_sql(upsert.table, 1, || upsert.sql(1));
                    let mut stmt = tx.prepare_cached(sql).map_err(sqlite_err)?;
                    for params in &upsert.rows {
                        stmt.execute(rusqlite::params_from_iter(params))
                            .map_err(sqlite_err)?;
                    }
                    Ok(())
                })?;
                pacing.step();
                tx.commit().map_err(sqlite_err)
            }
            // A round trip per statement: many rows to each.
            Db::Postgres(_) => {
                let mut statements = statements;
                for chunk in rows.chunks(INSERT_CHUNK) {
                    let mut params = Vec::with_capacity(chunk.len() * ROW_COLUMNS.len());
                    for row in chunk {
                        row_params(row, &mut params);
                    }
                    statements.push((insert_sql(chunk.len()), params));
                }
                rollup_upserts(rollups, |upsert| {
                    for chunk in upsert.rows.chunks(UPSERT_CHUNK) {
                        statements.push((upsert.sql(chunk.len()), chunk.concat()));
                    }
                    Ok(())
                })?;
                self.execute_in_transaction(&statements)
            }
        }
    }

    fn execute_in_transaction(
        &mut self,
        statements: &[(String, Vec<Param>)],
    ) -> Result<(), String> {
        match self {
            Db::Sqlite(conn) => {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(sqlite_err)?;
                for (sql, params) in statements {
                    let mut stmt = tx.prepare_cached(sql).map_err(sqlite_err)?;
                    stmt.execute(rusqlite::params_from_iter(params))
                        .map_err(sqlite_err)?;
                }
                tx.commit().map_err(sqlite_err)
            }
            Db::Postgres(client) => {
                let mut tx = client.transaction().map_err(pg_err)?;
                let mut prepared: BTreeMap<&str, postgres::Statement> = BTreeMap::new();
                for (sql, params) in statements {
                    if !prepared.contains_key(sql.as_str()) {
                        let stmt = tx.prepare(&pg_placeholders(sql)).map_err(pg_err)?;
                        prepared.insert(sql, stmt);
                    }
                    let boxed = pg_params(params);
                    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                        boxed.iter().map(|b| b.as_ref()).collect();
                    tx.execute(&prepared[sql.as_str()], &refs).map_err(pg_err)?;
                }
                tx.commit().map_err(pg_err)
            }
        }
    }

    /// Deletes at most `limit` raw rows and a few rollup buckets older than `cutoff_ms` (a day
    /// boundary, so that every table keeps the same span). Returns how many raw rows went and
    /// whether anything was deleted.
    pub fn prune(&mut self, cutoff_ms: i64, limit: usize) -> Result<(usize, bool), String> {
        let raw = format!(
            "DELETE FROM requests WHERE id IN \
             (SELECT id FROM requests WHERE finished_ms < ? LIMIT {limit})"
        );
        let deleted = self.execute(&raw, &[Param::Int(cutoff_ms)])?;
        let mut any = deleted > 0;
        // Batch ids only matter while a batch may be retried: a day is plenty.
        let batches = super::unix_ms(std::time::SystemTime::now()) - DAY_MS;
        self.execute(
            "DELETE FROM store_batches WHERE committed_ms < ?",
            &[Param::Int(batches)],
        )?;
        for (table, width) in [
            ("usage_15m", BUCKET_MS),
            ("usage_1d", DAY_MS),
            MARGINAL_ROLLUP,
            MARGINAL_DAYS,
            ("sessions_15m", BUCKET_MS),
            (RECENT_ROLLUP, BUCKET_MS),
            RECENT_DAYS,
        ] {
            let bucket = cutoff_ms.div_euclid(width);
            let sql = format!(
                "DELETE FROM {table} WHERE bucket IN (SELECT DISTINCT bucket FROM {table} \
                 WHERE bucket < ? ORDER BY bucket LIMIT {PRUNE_BUCKETS})"
            );
            any |= self.execute(&sql, &[Param::Int(bucket)])? > 0;
        }
        for dimension in RECENT_DIMENSIONS.into_iter().chain([SESSION_DIMENSION]) {
            let sql = format!(
                "DELETE FROM {RECENT_KEYS} WHERE dimension = ? AND value IN (SELECT value FROM \
                 {RECENT_KEYS} WHERE dimension = ? AND last_ms < ? LIMIT {limit})"
            );
            let params = [
                Param::Text(dimension.into()),
                Param::Text(dimension.into()),
                Param::Int(cutoff_ms),
            ];
            any |= self.execute(&sql, &params)? > 0;
        }
        Ok((deleted, any))
    }

    fn execute(&mut self, sql: &str, params: &[Param]) -> Result<usize, String> {
        match self {
            Db::Sqlite(conn) => conn
                .execute(sql, rusqlite::params_from_iter(params))
                .map_err(sqlite_err),
            Db::Postgres(client) => {
                let boxed = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref()).collect();
                client
                    .execute(pg_placeholders(sql).as_str(), &refs)
                    .map(|n| n as usize)
                    .map_err(pg_err)
            }
        }
    }

    /// Runs a query whose result columns have the types `cols`.
    pub fn select(
        &mut self,
        sql: &str,
        params: &[Param],
        cols: &[Col],
    ) -> Result<Vec<Vec<Cell>>, String> {
        let mut out = Vec::new();
        self.select_each(sql, params, cols, |cells| out.push(cells))?;
        Ok(out)
    }

    /// As [`select`](Self::select), handing each row to `each` as it is read (SQLite keeps no
    /// copy of the result: a query over many rows needs no memory for all of them).
    pub fn select_each(
        &mut self,
        sql: &str,
        params: &[Param],
        cols: &[Col],
        mut each: impl FnMut(Vec<Cell>),
    ) -> Result<(), String> {
        match self {
            Db::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql).map_err(sqlite_err)?;
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(params))
                    .map_err(sqlite_err)?;
                while let Some(row) = rows.next().map_err(sqlite_err)? {
                    let mut cells = Vec::with_capacity(cols.len());
                    for (i, col) in cols.iter().enumerate() {
                        let value: rusqlite::types::Value = row.get(i).map_err(sqlite_err)?;
                        cells.push(sqlite_cell(value, *col));
                    }
                    each(cells);
                }
                Ok(())
            }
            Db::Postgres(client) => {
                let boxed = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref()).collect();
                let rows = client
                    .query(pg_placeholders(sql).as_str(), &refs)
                    .map_err(pg_err)?;
                for row in rows {
                    let mut cells = Vec::with_capacity(cols.len());
                    for (i, col) in cols.iter().enumerate() {
                        cells.push(match col {
                            Col::Int => Cell::Int(
                                row.try_get::<_, Option<i64>>(i)
                                    .map_err(pg_err)?
                                    .unwrap_or(0),
                            ),
                            Col::Real => Cell::Real(
                                row.try_get::<_, Option<f64>>(i)
                                    .map_err(pg_err)?
                                    .unwrap_or(0.0),
                            ),
                            Col::Text => Cell::Text(
                                row.try_get::<_, Option<String>>(i)
                                    .map_err(pg_err)?
                                    .unwrap_or_default(),
                            ),
                        });
                    }
                    each(cells);
                }
                Ok(())
            }
        }
    }

    /// Test hook: caps the SQLite file at `pages` pages (0 = no cap), to simulate a full disk.
    pub fn set_max_pages(&mut self, pages: u64) -> Result<(), String> {
        if let Db::Sqlite(conn) = self {
            let pages = if pages == 0 { 4_294_967_294 } else { pages };
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(sqlite_err)?;
        }
        Ok(())
    }
}

fn sqlite_cell(value: rusqlite::types::Value, col: Col) -> Cell {
    use rusqlite::types::Value;
    match (col, value) {
        (Col::Int, Value::Integer(v)) => Cell::Int(v),
        (Col::Int, Value::Real(v)) => Cell::Int(v as i64),
        (Col::Real, Value::Integer(v)) => Cell::Real(v as f64),
        (Col::Real, Value::Real(v)) => Cell::Real(v),
        (Col::Text, Value::Text(v)) => Cell::Text(v),
        (Col::Text, Value::Integer(v)) => Cell::Text(v.to_string()),
        (Col::Int, _) => Cell::Int(0),
        (Col::Real, _) => Cell::Real(0.0),
        (Col::Text, _) => Cell::Text(String::new()),
    }
}

fn check_version(found: i64, known: i64) -> Result<(), String> {
    if found > known {
        return Err(format!(
            "the database's schema version {found} is newer than this sluice knows ({known}); \
             it is left untouched"
        ));
    }
    Ok(())
}

/// A file that exists must carry SQLite's header (an empty one is a new database to SQLite).
fn check_sqlite_header(path: &Path) -> Result<(), String> {
    match std::fs::File::open(path) {
        Ok(mut file) => {
            use std::io::Read;
            let mut header = [0u8; 16];
            let mut read = 0;
            while read < header.len() {
                match file.read(&mut header[read..]) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(err) => return Err(format!("cannot read it: {err}")),
                }
            }
            // An empty file is a new database to SQLite; anything else must carry its header.
            if read > 0 && (read < header.len() || &header != SQLITE_HEADER) {
                return Err(
                    "it is not an SQLite database; it is left untouched (move it away or \
                     point [store] path elsewhere)"
                        .into(),
                );
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(format!("cannot read it: {err}")),
    }
    Ok(())
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, String> {
    if path.is_dir() {
        return Err("it is a directory".into());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    check_sqlite_header(path)?;
    let conn = rusqlite::Connection::open(path).map_err(sqlite_err)?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(sqlite_err)?;
    // Reading the schema first: a damaged file fails here, before anything is written to it.
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| format!("{e}; it is left untouched"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sqlite_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "the store could not use WAL mode");
    }
    // WAL + NORMAL: a committed transaction survives the process being killed. A checkpoint
    // every 100 pages of WAL instead of SQLite's 1,000: the commit that runs it copies 400 KB
    // into the database, not 4 MB, in one stretch of the writer's CPU (docs/performance.md).
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF; \
         PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES};"
    ))
    .map_err(sqlite_err)?;
    Ok(conn)
}

/// SQLite's `memdb` VFS: a name starting with `/` is one database shared by every connection of
/// the process that opens it, with ordinary locking (so the busy timeout applies).
fn open_memory(name: &str) -> Result<rusqlite::Connection, String> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        format!("file:{name}?vfs=memdb"),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err)?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(sqlite_err)?;
    Ok(conn)
}

/// The raw-row expression of each rollup counter column.
pub(crate) fn raw_counter(column: &str) -> String {
    match column {
        "requests" => "1".into(),
        "errors" => format!(
            "CASE WHEN status >= 400 OR outcome IN ({}) THEN 1 ELSE 0 END",
            ERROR_OUTCOMES.map(|o| format!("'{o}'")).join(", ")
        ),
        "incomplete" => format!(
            "CASE WHEN outcome IN ({}) THEN 1 ELSE 0 END",
            INCOMPLETE_OUTCOMES.map(|o| format!("'{o}'")).join(", ")
        ),
        "cache_creation_tokens" => "cache_write_5m_tokens + cache_write_1h_tokens".into(),
        "cache_read_tokens" => "cache_read_tokens".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_pauses_once_its_interval_has_passed_since_the_last_pause() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut off = Pacing::off();
        assert!(!off.due(ms(0)) && !off.due(ms(1_000)));
        let mut pacing = Pacing::every(Duration::from_millis(5));
        assert!(!pacing.due(ms(0)), "the first step starts the count");
        assert!(!pacing.due(ms(4)));
        assert!(pacing.due(ms(5)));
        // `step` restarts the count after its pause; `due` alone does not.
        assert!(pacing.due(ms(9)));
        pacing.since = Some(ms(9));
        assert!(!pacing.due(ms(13)));
        assert!(pacing.due(ms(14)));
    }

    #[test]
    fn a_paced_batch_stores_what_an_unpaced_one_stores_and_checkpoints_every_100_pages() {
        let dir = tempfile::tempdir().unwrap();
        let rows = varied_rows(3 * SQLITE_INSERT_ROWS + 5);
        let mut stored = Vec::new();
        for (name, mut pacing) in [
            ("plain.db", Pacing::off()),
            // A pause at every step.
            ("paced.db", Pacing::every(Duration::ZERO)),
        ] {
            let path = dir.path().join(name);
            let mut db = Db::open(&Target::Sqlite(path.clone()), true).unwrap();
            db.write_batch(&rows, "w-1", &mut pacing).unwrap();
            stored.push(stored_rows(&path));
            let Db::Sqlite(own) = &db else { unreachable!() };
            let pages: u32 = own
                .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                .unwrap();
            assert_eq!(pages, WAL_CHECKPOINT_PAGES);
        }
        assert_eq!(stored[0].len(), rows.len());
        assert_eq!(stored[0], stored[1]);
    }

    #[test]
    fn a_memory_database_is_shared_by_the_connections_of_one_target_only() {
        let target = Target::memory();
        let mut writer = Db::open(&target, true).unwrap();
        writer
            .write_batch(&[StoreRow::default()], "w-1", &mut Pacing::off())
            .unwrap();
        let mut reader = Db::open(&target, false).unwrap();
        assert!(reader.batch_committed("w-1").unwrap());
        let mut other = Db::open(&Target::memory(), true).unwrap();
        assert!(!other.batch_committed("w-1").unwrap());
    }

    /// Rows whose values repeat, change every row, every few rows or between present and absent,
    /// across the 32-row statements and the single-row rest of a batch.
    fn varied_rows(count: usize) -> Vec<StoreRow> {
        (0..count)
            .map(|i| StoreRow {
                finished_ms: 1_000 + i as i64,
                instance: "host/127.0.0.1:4080/1".into(),
                route: if i % 7 == 0 { "/openai" } else { "/anthropic" }.into(),
                method: "POST".into(),
                status: if i % 5 == 0 { 429 } else { 200 },
                outcome: "completed".into(),
                streamed: i % 3 == 0,
                model: format!("model-{}", i / 10).into(),
                source: "client_api_key".into(),
                credential: format!("client_api_key:{:012x}", i % 4).into(),
                session: if i % 2 == 0 {
                    String::new().into()
                } else {
                    format!("s-{i}").into()
                },
                input_tokens: (i % 33) as u64,
                output_tokens: 7,
                cost_usd: if i % 9 == 0 { 0.5 } else { 0.25 },
                ttfb_ms: (i % 4 != 0).then_some(3),
                total_ms: (i % 32) as u64,
                overhead_ms: (i % 31 == 0).then_some(1),
                provider: "anthropic".into(),
                usage_missing: i % 11 == 0,
                ..StoreRow::default()
            })
            .collect()
    }

    #[test]
    fn every_value_of_every_row_is_stored_when_repeated_bindings_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut db = Db::open(&Target::Sqlite(path.clone()), true).unwrap();
        // Two batches: the second starts with statements whose bindings were cleared.
        let rows = varied_rows(2 * SQLITE_INSERT_ROWS + 11);
        db.write_batch(&rows, "w-1", &mut Pacing::off()).unwrap();
        let more = varied_rows(SQLITE_INSERT_ROWS + 3);
        db.write_batch(&more, "w-2", &mut Pacing::off()).unwrap();
        let stored = stored_rows(&path);
        let expected: Vec<Vec<rusqlite::types::Value>> = rows
            .iter()
            .chain(&more)
            .map(|row| {
                let mut params = Vec::new();
                row_params(row, &mut params);
                params
                    .into_iter()
                    .map(|p| match p {
                        Param::Int(v) => rusqlite::types::Value::Integer(v),
                        Param::Real(v) => rusqlite::types::Value::Real(v),
                        Param::Text(v) => rusqlite::types::Value::Text(v),
                        Param::NullInt => rusqlite::types::Value::Null,
                    })
                    .collect()
            })
            .collect();
        assert_eq!(stored.len(), expected.len());
        for (n, (stored, expected)) in stored.iter().zip(&expected).enumerate() {
            assert_eq!(stored, expected, "row {n}");
        }
    }

    /// Every column of every raw row in the SQLite store at `path`, in the order written.
    fn stored_rows(path: &Path) -> Vec<Vec<rusqlite::types::Value>> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let sql = format!(
            "SELECT {} FROM requests ORDER BY id",
            ROW_COLUMNS.join(", ")
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        stmt.query_map([], |r| {
            (0..ROW_COLUMNS.len())
                .map(|c| r.get::<_, rusqlite::types::Value>(c))
                .collect()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    #[test]
    fn a_committed_batch_is_known_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&Target::Sqlite(dir.path().join("s.db")), true).unwrap();
        db.write_batch(&[StoreRow::default()], "w-1", &mut Pacing::off())
            .unwrap();
        assert!(db.batch_committed("w-1").unwrap());
        assert!(!db.batch_committed("w-2").unwrap());
        // The same id twice is refused, so a batch can never be committed twice.
        assert!(db
            .write_batch(&[StoreRow::default()], "w-1", &mut Pacing::off())
            .is_err());
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            pg_placeholders("a = ? AND b IN (?, ?)"),
            "a = $1 AND b IN ($2, $3)"
        );
    }

    #[test]
    fn postgres_targets_are_described_without_credentials() {
        let target = Target::Postgres("postgres://sluice:hunter2@db.internal:5432/usage".into());
        let text = format!("{target:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("sluice:"),
            "{text}"
        );
        assert!(text.contains("db.internal:5432/usage"), "{text}");
        let socket = Target::Postgres("postgresql://postgres@/usage?host=/run/pg&port=5".into());
        assert_eq!(
            socket.describe(),
            "postgresql database /usage (host /run/pg)"
        );
    }
}
