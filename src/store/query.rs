//! Reading the store back: `/usage` (grouping, filters, time zones, JSON and CSV) and the
//! grouped counters of a `/stats` window.
//!
//! Whole 15-minute buckets are summed from the rollup tables; the partial buckets at a window's
//! edges, and groupings the rollups do not carry (session, agent), from the raw rows. Time
//! groups (hour, day, week, month, block) are formed here from the buckets, in the asked time
//! zone: every zone's offset is a multiple of 15 minutes, so a bucket never straddles a boundary.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::Serialize;

use super::db::{
    raw_counter, Cell, Col, Db, Param, ALL_KEYS, BUCKET_MS, COUNTER_COLUMNS, MARGINAL_DAYS,
    MARGINAL_ROLLUP, RECENT_DAYS, RECENT_KEYS, RECENT_ROLLUP, SESSION_DIMENSION, USAGE_ROLLUPS,
};
use super::{round_cost, unix_ms, Counters};
use crate::metrics::counters::Amount;
use crate::printable::{self, csv_field};

/// What `/usage` can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Hour,
    Day,
    Week,
    Month,
    Block,
    Session,
    Caller,
    Model,
    Credential,
    Source,
    Route,
    Agent,
    Project,
    Status,
    Provider,
    Client,
}

const GROUPS: [(Group, &str); 16] = [
    (Group::Hour, "hour"),
    (Group::Day, "day"),
    (Group::Week, "week"),
    (Group::Month, "month"),
    (Group::Block, "block"),
    (Group::Session, "session"),
    (Group::Caller, "caller"),
    (Group::Model, "model"),
    (Group::Credential, "credential"),
    (Group::Source, "source"),
    (Group::Route, "route"),
    (Group::Agent, "agent"),
    (Group::Project, "project"),
    (Group::Status, "status"),
    (Group::Provider, "provider"),
    (Group::Client, "client"),
];

impl Group {
    pub fn name(self) -> &'static str {
        GROUPS
            .iter()
            .find(|(g, _)| *g == self)
            .map_or("", |(_, n)| n)
    }

    fn parse(name: &str) -> Option<Group> {
        GROUPS.iter().find(|(_, n)| *n == name).map(|(g, _)| *g)
    }

    fn dimension(self) -> Dim {
        match self {
            Group::Hour | Group::Day | Group::Week | Group::Month | Group::Block => Dim::Bucket,
            Group::Session => Dim::Session,
            Group::Caller => Dim::Caller,
            Group::Model => Dim::Model,
            Group::Credential => Dim::Credential,
            Group::Source => Dim::Source,
            Group::Route => Dim::Route,
            Group::Agent => Dim::Agent,
            Group::Project => Dim::Project,
            Group::Status => Dim::Status,
            Group::Provider => Dim::Provider,
            Group::Client => Dim::Client,
        }
    }
}

/// A column rows are grouped or filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dim {
    Bucket,
    Route,
    Model,
    Source,
    Credential,
    Caller,
    Project,
    Status,
    Session,
    Agent,
    Provider,
    Client,
}

impl Dim {
    fn column(self) -> &'static str {
        match self {
            Dim::Bucket => "bucket",
            Dim::Route => "route",
            Dim::Model => "model",
            Dim::Source => "source",
            Dim::Credential => "credential",
            Dim::Caller => "caller",
            Dim::Project => "project",
            Dim::Status => "status",
            Dim::Session => "session",
            Dim::Agent => "agent",
            Dim::Provider => "provider",
            Dim::Client => "client",
        }
    }

    /// Whether the `usage_15m` rollup carries this column.
    fn in_rollup(self) -> bool {
        !matches!(
            self,
            Dim::Session | Dim::Agent | Dim::Provider | Dim::Client
        )
    }

    /// Whether the marginal rollups carry this column (on its own).
    fn in_marginal(self) -> bool {
        self.in_rollup() || matches!(self, Dim::Provider | Dim::Client)
    }

    fn col(self) -> Col {
        match self {
            Dim::Bucket | Dim::Status => Col::Int,
            _ => Col::Text,
        }
    }
}

/// The filters `/usage` takes: `(parameter, column, matches by prefix)`.
const FILTERS: [(&str, Dim, bool); 9] = [
    ("caller", Dim::Caller, false),
    ("model", Dim::Model, true),
    ("route", Dim::Route, false),
    ("source", Dim::Source, false),
    ("credential", Dim::Credential, false),
    ("session", Dim::Session, false),
    ("project", Dim::Project, false),
    ("provider", Dim::Provider, false),
    ("client", Dim::Client, false),
];

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    dim: Dim,
    prefix: bool,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// A `since`/`until` bound as written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TimeSpec {
    /// `30m`, `5h`, `7d`: this many milliseconds before now.
    Ago(i64),
    /// An RFC 3339 time.
    At(i64),
    /// A calendar date in the query's time zone: its start for `since`, its end for `until`.
    Date(Date),
}

/// A parsed `/usage` query string.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub group_by: Vec<Group>,
    filters: Vec<Filter>,
    since: Option<TimeSpec>,
    until: Option<TimeSpec>,
    pub tz: TimeZone,
    pub format: Format,
    /// The most rows answered; the rest are left out (the totals still count them) and the
    /// answer says it was truncated.
    pub limit: usize,
}

/// Rows `/usage` answers when the query sets no `limit`, and the most it may set: an answer
/// of 30,000 groups was 18 MB, and several at once held hundreds of MB.
pub const DEFAULT_USAGE_ROWS: usize = 10_000;
pub const MAX_USAGE_ROWS: usize = 50_000;

impl Default for UsageQuery {
    fn default() -> Self {
        Self {
            group_by: Vec::new(),
            filters: Vec::new(),
            since: None,
            until: None,
            tz: TimeZone::UTC,
            format: Format::Json,
            limit: DEFAULT_USAGE_ROWS,
        }
    }
}

/// Longest filter value accepted (longer ones cannot match a stored key).
const MAX_FILTER_BYTES: usize = super::MAX_KEY_BYTES;

impl UsageQuery {
    /// Parses a query string (`group_by=day,model&since=7d&tz=Europe/Berlin`). The error is a
    /// message for a 400 answer.
    pub fn parse(query: &str) -> Result<UsageQuery, String> {
        let mut parsed = UsageQuery::default();
        let mut seen: Vec<String> = Vec::new();
        let mut tz_name = None;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if seen.iter().any(|k| *k == key) {
                return Err(format!("`{key}` is given more than once"));
            }
            seen.push(key.to_string());
            match key.as_ref() {
                "group_by" => parsed.group_by = parse_group_by(&value)?,
                "since" => parsed.since = Some(parse_time("since", &value)?),
                "until" => parsed.until = Some(parse_time("until", &value)?),
                "tz" => tz_name = Some(value.to_string()),
                "limit" => {
                    parsed.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_USAGE_ROWS).contains(n))
                        .ok_or_else(|| {
                            format!(
                                "limit `{value}`: expected a number of rows, 1 to {MAX_USAGE_ROWS}"
                            )
                        })?
                }
                "format" => {
                    parsed.format = match value.as_ref() {
                        "json" => Format::Json,
                        "csv" => Format::Csv,
                        other => return Err(format!("format `{other}`: expected json or csv")),
                    }
                }
                name => {
                    let Some((_, dim, prefix)) = FILTERS.iter().find(|(n, _, _)| *n == name) else {
                        return Err(format!(
                            "unknown parameter `{name}`: expected group_by, since, until, tz, \
                             format, limit or a filter ({})",
                            FILTERS.map(|f| f.0).join(", ")
                        ));
                    };
                    if value.len() > MAX_FILTER_BYTES {
                        return Err(format!("`{name}` is longer than {MAX_FILTER_BYTES} bytes"));
                    }
                    parsed.filters.push(Filter {
                        dim: *dim,
                        prefix: *prefix,
                        value: value.to_string(),
                    });
                }
            }
        }
        if let Some(name) = tz_name {
            parsed.tz = TimeZone::get(&name).map_err(|_| {
                format!("tz `{name}`: not a known IANA time zone (e.g. Europe/Berlin)")
            })?;
        }
        Ok(parsed)
    }

    /// The window as unix milliseconds `[since, until)`; `None` = unbounded.
    pub fn range(&self, now: SystemTime) -> Result<(Option<i64>, Option<i64>), String> {
        let now = unix_ms(now);
        let resolve = |spec: TimeSpec, end_of_day: bool| -> Result<i64, String> {
            match spec {
                TimeSpec::Ago(ms) => Ok(now.saturating_sub(ms)),
                TimeSpec::At(ms) => Ok(ms),
                TimeSpec::Date(date) => {
                    let date = if end_of_day {
                        date.tomorrow().map_err(|e| e.to_string())?
                    } else {
                        date
                    };
                    date.to_zoned(self.tz.clone())
                        .map(|z| z.timestamp().as_millisecond())
                        .map_err(|e| e.to_string())
                }
            }
        };
        let since = self.since.map(|s| resolve(s, false)).transpose()?;
        let until = self.until.map(|u| resolve(u, true)).transpose()?;
        if let (Some(since), Some(until)) = (since, until) {
            if since >= until {
                return Err("`since` must be before `until`".into());
            }
        }
        Ok((since, until.or(Some(now))))
    }
}

fn parse_group_by(text: &str) -> Result<Vec<Group>, String> {
    let mut groups = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let group = Group::parse(name).ok_or_else(|| {
            format!(
                "group_by `{name}`: expected up to two of {}",
                GROUPS.map(|g| g.1).join(", ")
            )
        })?;
        if groups.contains(&group) {
            return Err(format!("group_by `{name}` is given twice"));
        }
        groups.push(group);
    }
    if groups.len() > 2 {
        return Err("group_by takes at most two groups".into());
    }
    Ok(groups)
}

fn parse_time(name: &str, text: &str) -> Result<TimeSpec, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "{name} `{text}`: expected a duration before now (30m, 5h, 7d), an RFC 3339 time \
             (2026-11-27T10:00:00Z) or a date (2026-11-27)"
        )
    };
    if let Some(unit) = text.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        if let Ok(amount) = text[..text.len() - 1].parse::<u32>() {
            let unit_ms: i64 = match unit {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                'w' => 7 * 86_400_000,
                _ => return Err(bad()),
            };
            return Ok(TimeSpec::Ago(i64::from(amount) * unit_ms));
        }
    }
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(TimeSpec::At(at.as_millisecond()));
    }
    if text.len() == 10 {
        if let Ok(date) = text.parse::<Date>() {
            return Ok(TimeSpec::Date(date));
        }
    }
    Err(bad())
}

/// One group key of a `/usage` row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyValue {
    /// A period: its start (for ordering) and its label.
    Time(i64, String),
    Text(String),
    Status(i64),
}

impl KeyValue {
    fn json(&self) -> serde_json::Value {
        match self {
            KeyValue::Time(_, label) => label.clone().into(),
            KeyValue::Text(text) if text.is_empty() => serde_json::Value::Null,
            KeyValue::Text(text) => text.clone().into(),
            KeyValue::Status(status) => (*status).into(),
        }
    }

    fn csv(&self) -> String {
        match self {
            KeyValue::Time(_, label) => label.clone(),
            KeyValue::Text(text) => text.clone(),
            KeyValue::Status(status) => status.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    pub keys: Vec<KeyValue>,
    pub counters: Counters,
}

/// `/usage`'s answer.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    /// RFC 3339 (UTC); `None` when unbounded.
    pub since: Option<String>,
    pub until: Option<String>,
    pub group_by: Vec<Group>,
    pub rows: Vec<UsageRow>,
    pub totals: Counters,
    /// Rows were left out to keep to the query's `limit`.
    pub truncated: bool,
    /// Grouped rows read from the store to answer (with a group by keys only, at most
    /// `limit + 1` per piece of the window).
    pub rows_read: usize,
}

fn counters_json(counters: &Counters, into: &mut serde_json::Map<String, serde_json::Value>) {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(counters) {
        into.extend(fields);
    }
}

impl UsageReport {
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut object = serde_json::Map::new();
                for (group, key) in self.group_by.iter().zip(&row.keys) {
                    object.insert(group.name().into(), key.json());
                }
                counters_json(&row.counters, &mut object);
                object.into()
            })
            .collect();
        serde_json::json!({
            "since": self.since,
            "until": self.until,
            "group_by": self.group_by.iter().map(|g| g.name()).collect::<Vec<_>>(),
            "rows": rows,
            "totals": self.totals,
            "truncated": self.truncated,
        })
    }

    /// A header line, then one line per row: the group keys, then the counters.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header: Vec<&str> = self
            .group_by
            .iter()
            .map(|g| g.name())
            .chain(Counters::FIELDS.iter().map(|(name, _)| *name))
            .collect();
        out.push_str(&header.join(","));
        out.push('\n');
        for row in &self.rows {
            let mut fields: Vec<String> = row.keys.iter().map(|k| csv_field(&k.csv())).collect();
            fields.extend(row.counters.amounts().map(|amount| match amount {
                Amount::Count(n) => n.to_string(),
                Amount::Usd(usd) => round_cost(usd).to_string(),
            }));
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        if self.truncated {
            // A trailer, so the header stays the first line; `#` starts no row.
            out.push_str(&format!(
                "# truncated: the first {} rows; the totals count them all. Set limit (at most \
                 {MAX_USAGE_ROWS}) or narrow the query.\n",
                self.rows.len()
            ));
        }
        out
    }

    /// The body and its content type in the asked format.
    pub fn render(&self, format: Format) -> (&'static str, String) {
        match format {
            // Names from clients stay the same data, with no control or bidi character that
            // would act on a terminal printing the answer.
            Format::Json => (
                "application/json",
                printable::escape_json_text(&self.to_json().to_string()).into_owned(),
            ),
            Format::Csv => ("text/csv; charset=utf-8", self.to_csv()),
        }
    }
}

/// Runs a `/usage` query.
pub fn usage(db: &mut Db, query: &UsageQuery, now: SystemTime) -> Result<UsageReport, String> {
    let (since, until) = query.range(now)?;
    let mut dims: Vec<Dim> = Vec::new();
    for group in &query.group_by {
        let dim = group.dimension();
        if !dims.contains(&dim) {
            dims.push(dim);
        }
    }
    // Day rollups are UTC days: they serve time groups only when those are UTC days too.
    let days = query.group_by.iter().all(|g| {
        matches!(g, Group::Day | Group::Week | Group::Month) || g.dimension() != Dim::Bucket
    }) && is_utc(&query.tz);
    // Groups by keys only (no period): the database hands over at most `limit + 1` groups of
    // each piece of the window, and the totals come from a query of their own. Periods are
    // made of several buckets each, and stay bounded by the window (at most 35,040 buckets a
    // year in 15-minute units, fewer from the rollups).
    let by_keys_only = !dims.is_empty() && !dims.contains(&Dim::Bucket);
    let first = by_keys_only.then_some(query.limit.saturating_add(1));
    let Grouped {
        groups: grouped,
        rows_read,
        cut,
    } = read_grouped_first(db, &dims, since, until, &query.filters, days, first)?;
    let key_totals = if by_keys_only {
        let all = read_grouped(db, &[], since, until, &query.filters, days)?;
        Some(
            all.into_iter()
                .fold(Counters::default(), |mut totals, (_, c)| {
                    totals.merge(&c);
                    totals
                }),
        )
    } else {
        None
    };

    let blocks = if query.group_by.contains(&Group::Block) {
        let at = dims
            .iter()
            .position(|d| *d == Dim::Bucket)
            .expect("block groups by bucket");
        let mut buckets: Vec<i64> = grouped.iter().map(|(cells, _)| cells[at].int()).collect();
        buckets.sort_unstable();
        buckets.dedup();
        block_starts(&buckets)
    } else {
        HashMap::new()
    };

    let mut labels: HashMap<(Group, i64), KeyValue> = HashMap::new();
    let mut rows: BTreeMap<Vec<KeyValue>, Counters> = BTreeMap::new();
    let mut totals = Counters::default();
    for (cells, counters) in grouped {
        let mut keys = Vec::with_capacity(query.group_by.len());
        for group in &query.group_by {
            let dim = group.dimension();
            let cell = &cells[dims.iter().position(|d| *d == dim).expect("selected")];
            keys.push(match dim {
                Dim::Bucket => {
                    let bucket = cell.int();
                    labels
                        .entry((*group, bucket))
                        .or_insert_with(|| time_key(*group, bucket, &blocks, &query.tz))
                        .clone()
                }
                Dim::Status => KeyValue::Status(cell.int()),
                _ => KeyValue::Text(cell.clone().into_text()),
            });
        }
        totals.merge(&counters);
        rows.entry(keys).or_default().merge(&counters);
    }
    // The first rows in key order (periods from the oldest) up to the limit.
    let truncated = rows.len() > query.limit || cut;
    let totals = key_totals.unwrap_or(totals);
    Ok(UsageReport {
        since: since.map(super::rfc3339_ms),
        until: until.map(super::rfc3339_ms),
        group_by: query.group_by.clone(),
        rows: rows
            .into_iter()
            .take(query.limit)
            .map(|(keys, counters)| UsageRow { keys, counters })
            .collect(),
        totals,
        truncated,
        rows_read,
    })
}

fn is_utc(tz: &TimeZone) -> bool {
    tz.to_fixed_offset()
        .is_ok_and(|offset| offset == jiff::tz::Offset::UTC)
        || matches!(tz.iana_name(), Some("UTC" | "Etc/UTC" | "GMT" | "Etc/GMT"))
}

/// Buckets per hour.
const HOUR_BUCKETS: i64 = 3_600_000 / BUCKET_MS;
/// Buckets per 5-hour block.
const BLOCK_BUCKETS: i64 = 5 * HOUR_BUCKETS;

/// Maps each (sorted, distinct) bucket to the first bucket of its 5-hour block: a block starts at
/// the (UTC) hour of its first request and lasts 5 hours; the first request after it starts the
/// next one.
fn block_starts(sorted_buckets: &[i64]) -> HashMap<i64, i64> {
    let mut starts = HashMap::with_capacity(sorted_buckets.len());
    let mut current: Option<i64> = None;
    for &bucket in sorted_buckets {
        let start = match current {
            Some(start) if bucket < start + BLOCK_BUCKETS => start,
            _ => bucket - bucket.rem_euclid(HOUR_BUCKETS),
        };
        current = Some(start);
        starts.insert(bucket, start);
    }
    starts
}

const LOCAL_TIME: &str = "%Y-%m-%dT%H:%M:%S%:z";

fn time_key(group: Group, bucket: i64, blocks: &HashMap<i64, i64>, tz: &TimeZone) -> KeyValue {
    let zoned = |ms: i64| -> Zoned {
        Timestamp::from_millisecond(ms)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(tz.clone())
    };
    let at = zoned(bucket * BUCKET_MS);
    let day_start = |date: Date| -> i64 {
        date.to_zoned(tz.clone())
            .map_or(0, |z| z.timestamp().as_millisecond())
    };
    match group {
        Group::Hour => {
            let start = at
                .with()
                .minute(0)
                .second(0)
                .subsec_nanosecond(0)
                .build()
                .unwrap_or_else(|_| at.clone());
            KeyValue::Time(
                start.timestamp().as_millisecond(),
                start.strftime(LOCAL_TIME).to_string(),
            )
        }
        Group::Day => KeyValue::Time(day_start(at.date()), at.date().to_string()),
        Group::Week => {
            let offset = i64::from(at.date().weekday().to_monday_zero_offset());
            let monday = at
                .date()
                .checked_sub(jiff::Span::new().days(offset))
                .unwrap_or(at.date());
            KeyValue::Time(day_start(monday), monday.to_string())
        }
        Group::Month => {
            let first = at.date().first_of_month();
            KeyValue::Time(day_start(first), first.strftime("%Y-%m").to_string())
        }
        Group::Block => {
            let start = blocks.get(&bucket).copied().unwrap_or(bucket) * BUCKET_MS;
            KeyValue::Time(start, zoned(start).strftime(LOCAL_TIME).to_string())
        }
        _ => KeyValue::Text(String::new()),
    }
}

/// Which part of a window a piece of SQL reads.
#[derive(Debug, PartialEq)]
enum Source {
    /// Whole buckets `[from, to)` of the rollup table `table`, buckets `width` ms wide.
    Rollup {
        table: &'static str,
        width: i64,
        from: i64,
        to: i64,
    },
    /// Milliseconds `[from, to)` from the raw rows.
    Raw(i64, i64),
}

/// Splits `[since, until)` into whole buckets of the coarsest rollup in `levels` that fits, then
/// of the next ones at the edges, and the raw rows of what remains at the very edges.
fn pieces(since: Option<i64>, until: Option<i64>, levels: &[(&'static str, i64)]) -> Vec<Source> {
    let Some(((table, width), finer)) = levels.split_first() else {
        return vec![Source::Raw(
            since.unwrap_or(i64::MIN),
            until.unwrap_or(i64::MAX),
        )];
    };
    let first = since.map_or(i64::MIN / width, |s| div_ceil(s, *width));
    let end = until.map_or(i64::MAX / width, |u| u.div_euclid(*width));
    if first >= end {
        return pieces(since, until, finer);
    }
    let mut out = vec![Source::Rollup {
        table,
        width: *width,
        from: first,
        to: end,
    }];
    if let Some(since) = since.filter(|s| *s < first * width) {
        out.extend(pieces(Some(since), Some(first * width), finer));
    }
    if let Some(until) = until.filter(|u| *u > end * width) {
        out.extend(pieces(Some(end * width), Some(until), finer));
    }
    out
}

/// A part of a window to read, and whether what it holds is taken away (a raw range outside
/// the window inside a rollup bucket that is read whole).
type Piece = (Source, bool);

/// Raw rows counted up to this many to decide which side of an edge bucket to read.
const EDGE_PROBE_ROWS: i64 = 2_000;

/// [`pieces`], with each raw edge that lies in one bucket of the finest level read as that
/// bucket's rollup row minus the raw rows of the bucket outside the window, when those are fewer:
/// a burst of requests just after the window's start then costs nothing to read.
fn edges(
    db: &mut Db,
    since: Option<i64>,
    until: Option<i64>,
    levels: &[(&'static str, i64)],
) -> Result<Vec<Piece>, String> {
    // A window from inside a day to its end or later: that whole day less its part before the
    // window, when that part holds fewer rows (a window of the last hour, after a busy hour).
    if let (Some(since), [(day_table, day), finer @ ..]) = (since, levels) {
        let start = since.div_euclid(*day) * day;
        let end = start + day;
        if !finer.is_empty()
            && since > start
            && until.map_or(true, |u| u >= end)
            && day_less_before(db, start, since, end)?
        {
            let mut out = vec![(
                Source::Rollup {
                    table: day_table,
                    width: *day,
                    from: start / day,
                    to: end / day,
                },
                false,
            )];
            out.extend(
                pieces(Some(start), Some(since), finer)
                    .into_iter()
                    .map(|p| (p, true)),
            );
            if until.map_or(true, |u| u > end) {
                out.extend(edges(db, Some(end), until, levels)?);
            }
            return Ok(out);
        }
    }
    let mut out = Vec::new();
    let Some(&(table, width)) = levels.last() else {
        return Ok(pieces(since, until, levels)
            .into_iter()
            .map(|p| (p, false))
            .collect());
    };
    for piece in pieces(since, until, levels) {
        let Source::Raw(from, to) = piece else {
            out.push((piece, false));
            continue;
        };
        let bucket = from.div_euclid(width);
        let (start, end) = (bucket * width, (bucket + 1) * width);
        if to > end || from == i64::MIN || to == i64::MAX {
            out.push((piece, false));
            continue;
        }
        let inside = count_raw(db, from, to)?;
        let outside = if inside < EDGE_PROBE_ROWS {
            i64::MAX
        } else {
            count_raw(db, start, from)?.saturating_add(count_raw(db, to, end)?)
        };
        if outside >= inside {
            out.push((piece, false));
            continue;
        }
        out.push((
            Source::Rollup {
                table,
                width,
                from: bucket,
                to: bucket + 1,
            },
            false,
        ));
        for (from, to) in [(start, from), (to, end)] {
            if from < to {
                out.push((Source::Raw(from, to), true));
            }
        }
    }
    Ok(out)
}

/// Rollup rows counted up to this many to decide how to read a window's first day.
const DAY_PROBE_ROWS: i64 = 50_000;

/// Whether `[since, end)` (the rest of the day from `start`) is cheaper read as the whole day
/// less `[start, since)`: when the part before holds fewer 15-minute rollup rows (fewer keys) than
/// the part after. Either way is exact; the answer for the last window asked is kept, so that the
/// several reads of one `/stats` count only once.
fn day_less_before(db: &mut Db, start: i64, since: i64, end: i64) -> Result<bool, String> {
    static LAST: std::sync::Mutex<Option<((i64, i64), bool)>> = std::sync::Mutex::new(None);
    let cached = *LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, less)) = cached.filter(|(key, _)| *key == (since, end)) {
        return Ok(less);
    }
    let mut rows = |from: i64, to: i64| -> Result<i64, String> {
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM {} WHERE bucket >= ? AND bucket < ? \
             LIMIT {DAY_PROBE_ROWS}) AS probe",
            MARGINAL_ROLLUP.0
        );
        let found = db.select(&sql, &[Param::Int(from), Param::Int(to)], &[Col::Int])?;
        Ok(found.first().map_or(0, |r| r[0].int()))
    };
    let before = rows(start / BUCKET_MS, div_ceil(since, BUCKET_MS))?;
    let less = before < DAY_PROBE_ROWS && before < rows(since / BUCKET_MS, end / BUCKET_MS)?;
    *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(((since, end), less));
    Ok(less)
}

/// How many raw rows finished in `[from, to)`, counted up to [`EDGE_PROBE_ROWS`].
fn count_raw(db: &mut Db, from: i64, to: i64) -> Result<i64, String> {
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM requests WHERE finished_ms >= ? AND finished_ms < ? \
         LIMIT {EDGE_PROBE_ROWS}) AS probe"
    );
    let rows = db.select(&sql, &[Param::Int(from), Param::Int(to)], &[Col::Int])?;
    Ok(rows.first().map_or(0, |r| r[0].int()))
}

fn div_ceil(a: i64, b: i64) -> i64 {
    -((-a).div_euclid(b))
}

/// Counters from their columns. Sums are read as floats (so that they cannot overflow); counts
/// are clamped back into range.
fn counters_of(cells: &[Cell]) -> Counters {
    let mut i = 0;
    Counters::from_amounts(Counters::default().amounts().map(|kind| {
        let value = cells.get(i).map_or(0.0, Cell::real);
        i += 1;
        kind.with_value(value)
    }))
}

/// Reads counters grouped by `dims` over `[since, until)`, filtered: one entry per group and
/// piece of the window (the caller merges).
fn read_grouped(
    db: &mut Db,
    dims: &[Dim],
    since: Option<i64>,
    until: Option<i64>,
    filters: &[Filter],
    days: bool,
) -> Result<Vec<(Vec<Cell>, Counters)>, String> {
    read_grouped_first(db, dims, since, until, filters, days, None).map(|read| read.groups)
}

/// What [`read_grouped_first`] read.
struct Grouped {
    groups: Vec<(Vec<Cell>, Counters)>,
    /// Grouped rows the database handed over, over every piece of the window.
    rows_read: usize,
    /// A piece had more groups than the limit: some were not read.
    cut: bool,
}

/// [`read_grouped`], reading with `first = Some(n)` only the first `n` groups of each piece of
/// the window in key order (`LIMIT` in the SQL, so the database hands over no more): the first
/// `n` groups of the whole window are among them, since a group among those has fewer than `n`
/// groups before it in any piece. Only for keys that sort in SQL as here (not time buckets,
/// which several make one row).
fn read_grouped_first(
    db: &mut Db,
    dims: &[Dim],
    since: Option<i64>,
    until: Option<i64>,
    filters: &[Filter],
    days: bool,
    first: Option<usize>,
) -> Result<Grouped, String> {
    let (mut rows_read, mut cut) = (0usize, false);
    let rollups = dims.iter().all(|d| d.in_rollup()) && filters.iter().all(|f| f.dim.in_rollup());
    // The key columns grouped or filtered by: with at most one, the marginal rollup serves
    // (without any, each of its dimensions sums to the totals; route is as good as any).
    let mut touched: Vec<Dim> = dims
        .iter()
        .copied()
        .filter(|d| *d != Dim::Bucket)
        .chain(filters.iter().map(|f| f.dim))
        .collect();
    touched.dedup();
    let marginal = (touched.len() <= 1)
        .then(|| touched.first().copied().unwrap_or(Dim::Route))
        .filter(|dim| dim.in_marginal());
    let levels: Vec<(&str, i64)> = match (rollups, days, marginal) {
        (_, true, Some(_)) => vec![MARGINAL_DAYS, MARGINAL_ROLLUP],
        (_, false, Some(_)) => vec![MARGINAL_ROLLUP],
        (false, _, None) => vec![],
        (true, true, None) => USAGE_ROLLUPS.to_vec(),
        (true, false, None) => USAGE_ROLLUPS[1..].to_vec(),
    };
    // A key column's name in `table`.
    let is_marginal = |table: &str| table == MARGINAL_ROLLUP.0 || table == MARGINAL_DAYS.0;
    let column = |dim: Dim, table: &str| -> String {
        match (dim, is_marginal(table)) {
            (Dim::Status, true) => "CAST(value AS BIGINT)".into(),
            (_, true) => "value".into(),
            (other, false) => other.column().into(),
        }
    };
    let mut cols: Vec<Col> = dims.iter().map(|d| d.col()).collect();
    cols.extend([Col::Real; COUNTER_COLUMNS.len()]);
    // Group → (its key cells, what the window's pieces add, what they take away).
    type Net = (Vec<Cell>, Counters, Counters);
    let mut net: BTreeMap<Vec<(i64, String)>, Net> = BTreeMap::new();
    for (piece, minus) in edges(db, since, until, &levels)? {
        let (table, select_dims, sums, range_column, from, to) = match piece {
            Source::Rollup {
                table,
                width,
                from,
                to,
            } => (
                table,
                dims.iter()
                    .map(|d| match d {
                        // Buckets are counted in 15-minute units whatever the table.
                        Dim::Bucket => format!("bucket * {}", width / BUCKET_MS),
                        other => column(*other, table),
                    })
                    .collect::<Vec<_>>(),
                COUNTER_COLUMNS
                    .iter()
                    .map(|c| format!("SUM(CAST({c} AS DOUBLE PRECISION))"))
                    .collect::<Vec<_>>(),
                "bucket",
                from,
                to,
            ),
            Source::Raw(from, to) => (
                "requests",
                dims.iter()
                    .map(|d| match d {
                        Dim::Bucket => format!("finished_ms / {BUCKET_MS}"),
                        other => other.column().to_string(),
                    })
                    .collect(),
                COUNTER_COLUMNS
                    .iter()
                    .map(|c| format!("SUM(CAST({} AS DOUBLE PRECISION))", raw_counter(c)))
                    .collect(),
                "finished_ms",
                from,
                to,
            ),
        };
        let mut sql = format!(
            "SELECT {} FROM {table} WHERE {range_column} >= ? AND {range_column} < ?",
            select_dims
                .iter()
                .cloned()
                .chain(sums)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut params = vec![Param::Int(from), Param::Int(to)];
        if is_marginal(table) {
            let dimension = marginal.expect("the marginal rollup is read for one dimension");
            sql.push_str(&format!(" AND dimension = '{}'", dimension.column()));
        }
        for filter in filters {
            let name = column(filter.dim, table);
            if filter.prefix {
                // The length is ours, not the client's text: safe to write into the SQL.
                let chars = filter.value.chars().count();
                sql.push_str(&format!(" AND substr({name}, 1, {chars}) = ?"));
            } else {
                sql.push_str(&format!(" AND {name} = ?"));
            }
            params.push(Param::Text(filter.value.clone()));
        }
        if !dims.is_empty() {
            let positions: Vec<String> = (1..=dims.len()).map(|i| i.to_string()).collect();
            sql.push_str(&format!(" GROUP BY {}", positions.join(", ")));
        } else {
            // An aggregate over no rows is one row of NULLs: skip it.
            sql.push_str(" HAVING COUNT(*) > 0");
        }
        if let (Some(first), false) = (first, dims.is_empty()) {
            // Byte order, as the answer sorts its keys (PostgreSQL's default collation may
            // follow a locale; SQLite compares bytes).
            let order: Vec<String> = select_dims
                .iter()
                .zip(dims)
                .map(|(expr, dim)| match (dim.col(), db.is_postgres()) {
                    (Col::Text, true) => format!("{expr} COLLATE \"C\""),
                    _ => expr.clone(),
                })
                .collect();
            sql.push_str(&format!(" ORDER BY {} LIMIT {first}", order.join(", ")));
        }
        let selected = db.select(&sql, &params, &cols)?;
        rows_read += selected.len();
        cut |= first.is_some_and(|first| !dims.is_empty() && selected.len() >= first);
        for mut cells in selected {
            let counters = counters_of(&cells[dims.len()..]);
            cells.truncate(dims.len());
            let key = cells
                .iter()
                .map(|c| match c {
                    Cell::Text(text) => (0, text.clone()),
                    other => (other.int(), String::new()),
                })
                .collect();
            let entry = net
                .entry(key)
                .or_insert_with(|| (cells, Counters::default(), Counters::default()));
            if minus {
                entry.2.merge(&counters);
            } else {
                entry.1.merge(&counters);
            }
        }
    }
    // A group that something was taken from and that is left with nothing was only outside the
    // window. (Imported history may hold groups with tokens and no requests: those stay.)
    let groups = net
        .into_values()
        .filter_map(|(cells, plus, minus)| {
            let net = plus.saturating_sub(&minus);
            let emptied = minus != Counters::default()
                && net.amounts().into_iter().all(|amount| match amount {
                    Amount::Count(n) => n == 0,
                    Amount::Usd(usd) => usd.abs() < 1e-9,
                });
            (!emptied).then_some((cells, net))
        })
        .collect();
    Ok(Grouped {
        groups,
        rows_read,
        cut,
    })
}

/// One session (or other key) of a `/stats` window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionUsage {
    pub session: String,
    /// When its last request in the window finished, unix milliseconds.
    pub last_ms: i64,
    pub counters: Counters,
}

/// The groups of `/stats` over a window, from the store. Groups a client can grow without limit
/// by sending new keys (credentials, projects, agents, sessions) hold only the most recently
/// active keys; `folded` counts the requests of the keys left out.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct StatsWindow {
    pub totals: Counters,
    pub by_route: BTreeMap<String, Counters>,
    /// The models with the most requests (at most the limit asked for), the rest under
    /// `"other"`; the caller bounds it further (it knows the price table).
    pub by_model: BTreeMap<String, Counters>,
    pub by_source: BTreeMap<String, Counters>,
    pub by_credential: BTreeMap<String, Counters>,
    pub by_caller: BTreeMap<String, Counters>,
    /// The most recently active sessions, newest first (in JSON: an object by session id).
    #[serde(serialize_with = "sessions_by_id")]
    pub by_session: Vec<SessionUsage>,
    pub by_agent: BTreeMap<String, Counters>,
    pub by_project: BTreeMap<String, Counters>,
    pub by_status: BTreeMap<String, u64>,
    /// By the route's protocol; and by the agent or SDK that sent the request. Both are closed
    /// sets of names, so neither is ever folded.
    pub by_provider: BTreeMap<String, Counters>,
    pub by_client: BTreeMap<String, Counters>,
    /// Per group (`by_credential`, …): requests counted under `"other"` or of keys left out.
    pub folded: BTreeMap<String, u64>,
    /// When the oldest request the store holds finished (unix ms); `None` when it holds none.
    #[serde(skip)]
    pub oldest_ms: Option<i64>,
}

fn sessions_by_id<S: serde::Serializer>(
    sessions: &[SessionUsage],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(sessions.iter().map(|s| (&s.session, &s.counters)))
}

/// Every `/stats` group over `[since, until)`, with at most `recent_limit` keys in each group
/// of [`StatsWindow`] that clients can grow.
pub fn window(
    db: &mut Db,
    since: Option<i64>,
    until: Option<i64>,
    recent_limit: usize,
    model_limit: usize,
) -> Result<StatsWindow, String> {
    let mut stats = StatsWindow::default();
    // One key column at a time: each is answered from the marginal rollup.
    for (dim, map) in [
        (Dim::Route, &mut stats.by_route),
        (Dim::Source, &mut stats.by_source),
        (Dim::Caller, &mut stats.by_caller),
        (Dim::Provider, &mut stats.by_provider),
        (Dim::Client, &mut stats.by_client),
    ] {
        for (cells, counters) in read_grouped(db, &[dim], since, until, &[], true)? {
            if let Some(Cell::Text(key)) = cells.first() {
                if !key.is_empty() {
                    map.entry(key.clone()).or_default().merge(&counters);
                }
            }
        }
    }
    for (cells, counters) in read_grouped(db, &[Dim::Status], since, until, &[], true)? {
        stats.totals.merge(&counters);
        let status = stats
            .by_status
            .entry(cells[0].int().to_string())
            .or_default();
        *status = status.saturating_add(counters.requests);
    }
    let (models, folded) = most_used_models(db, since, until, model_limit, &stats.totals)?;
    stats.by_model = models;
    stats.folded.insert("by_model".into(), folded);
    for (group, dim) in [
        ("by_credential", Dim::Credential),
        ("by_project", Dim::Project),
        ("by_agent", Dim::Agent),
    ] {
        let (kept, folded) = recent_keys(db, dim, since, until, recent_limit)?;
        let map = match dim {
            Dim::Credential => &mut stats.by_credential,
            Dim::Project => &mut stats.by_project,
            _ => &mut stats.by_agent,
        };
        map.extend(kept);
        stats.folded.insert(group.into(), folded);
    }
    let (sessions, in_sessions) = sessions(db, since, until, recent_limit)?;
    let kept: u64 = sessions.iter().map(|s| s.counters.requests).sum();
    stats
        .folded
        .insert("by_session".into(), in_sessions.saturating_sub(kept));
    stats.by_session = sessions;
    stats.oldest_ms = oldest(db)?;
    Ok(stats)
}

/// A union of `rollup(table)` (a select from that rollup table with two placeholders for its
/// bucket range) over the window's whole buckets of each of `levels`, and `raw` (a select from
/// `requests` with two placeholders for its time range) over the rest at its edges; with the
/// placeholders' values.
fn window_union(
    rollup: impl Fn(&str) -> String,
    raw: &str,
    since: Option<i64>,
    until: Option<i64>,
    levels: &[(&'static str, i64)],
) -> (String, Vec<Param>) {
    let mut parts = Vec::new();
    let mut params = Vec::new();
    for piece in pieces(since, until, levels) {
        let (part, from, to) = match piece {
            Source::Rollup {
                table, from, to, ..
            } => (rollup(table), from, to),
            Source::Raw(from, to) => (raw.to_string(), from, to),
        };
        parts.push(part);
        params.extend([Param::Int(from), Param::Int(to)]);
    }
    (parts.join(" UNION ALL "), params)
}

/// The raw rows' counter columns, named as in the rollups.
fn raw_counters() -> String {
    COUNTER_COLUMNS
        .map(|c| format!("{} AS {c}", raw_counter(c)))
        .join(", ")
}

/// The `limit` models with the most requests in the window (ties by name), and the others'
/// counters (`totals` less the kept models' and those without a model) merged under `"other"`;
/// with how many requests went to `"other"`.
///
/// Models are ranked by their request counts alone, read per piece of the window in key order
/// (the day rollup is kept by model; the 15-minute one has an index holding the counts), then
/// only the kept models' counters are read.
fn most_used_models(
    db: &mut Db,
    since: Option<i64>,
    until: Option<i64>,
    limit: usize,
    totals: &Counters,
) -> Result<(BTreeMap<String, Counters>, u64), String> {
    let parts = edges(db, since, until, &[MARGINAL_DAYS, MARGINAL_ROLLUP])?;
    let mut requests: HashMap<String, i64> = HashMap::new();
    // The widest rollup piece up to now last: when the others hold no models, the database ranks
    // that one alone, keeping only the first `limit`.
    let now = unix_ms(SystemTime::now());
    let mut order: Vec<&Piece> = parts.iter().collect();
    if let Some(widest) = (0..order.len()).max_by_key(|&i| match order[i] {
        (
            Source::Rollup {
                width, from, to, ..
            },
            false,
        ) => to
            .saturating_mul(*width)
            .min(now)
            .saturating_sub(from.saturating_mul(*width).min(now)),
        _ => 0,
    }) {
        let piece = order.remove(widest);
        order.push(piece);
    }
    let last = order.len().saturating_sub(1);
    for (at, (piece, minus)) in order.into_iter().enumerate() {
        let top = if at == last && requests.is_empty() && !*minus {
            format!(" ORDER BY 2 DESC, 1 LIMIT {limit}")
        } else {
            String::new()
        };
        let (sql, params) = match *piece {
            Source::Rollup {
                table, from, to, ..
            } => (
                format!(
                    "SELECT value, CAST(SUM(requests) AS BIGINT) FROM {table} WHERE dimension = 'model' \
                     AND bucket >= ? AND bucket < ? AND value <> '' GROUP BY value{top}"
                ),
                [Param::Int(from), Param::Int(to)],
            ),
            Source::Raw(from, to) => (
                format!(
                    "SELECT model, COUNT(*) FROM requests WHERE finished_ms >= ? \
                     AND finished_ms < ? AND model <> '' GROUP BY model{top}"
                ),
                [Param::Int(from), Param::Int(to)],
            ),
        };
        db.select_each(&sql, &params, &[Col::Text, Col::Int], |mut cells| {
            let count = cells[1].int();
            let model = std::mem::replace(&mut cells[0], Cell::Int(0)).into_text();
            let entry = requests.entry(model).or_default();
            *entry = if *minus {
                entry.saturating_sub(count)
            } else {
                entry.saturating_add(count)
            };
        })?;
    }
    let mut ranked: Vec<(String, i64)> = requests.into_iter().filter(|(_, n)| *n > 0).collect();
    let by_rank = |a: &(String, i64), b: &(String, i64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if ranked.len() > limit {
        if limit > 0 {
            ranked.select_nth_unstable_by(limit - 1, by_rank);
        }
        ranked.truncate(limit);
    }
    // The kept models' counters, and those of requests without a model (not "other").
    let mut plus: BTreeMap<String, Counters> = BTreeMap::new();
    let mut minus: BTreeMap<String, Counters> = BTreeMap::new();
    let list = format!("({})", vec!["?"; ranked.len() + 1].join(", "));
    let mut keys: Vec<Param> = ranked.iter().map(|(m, _)| Param::Text(m.clone())).collect();
    keys.push(Param::Text(String::new()));
    let sums = |expr: &dyn Fn(&str) -> String| -> String {
        COUNTER_COLUMNS
            .iter()
            .map(|c| format!("SUM(CAST({} AS DOUBLE PRECISION))", expr(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cols = vec![Col::Text];
    cols.extend([Col::Real; COUNTER_COLUMNS.len()]);
    for (piece, is_minus) in &parts {
        let (sql, from, to) = match *piece {
            Source::Rollup {
                table, from, to, ..
            } => (
                format!(
                    "SELECT value, {} FROM {table} WHERE dimension = 'model' AND value IN {list} \
                     AND bucket >= ? AND bucket < ? GROUP BY value",
                    sums(&|c| c.to_string())
                ),
                from,
                to,
            ),
            Source::Raw(from, to) => (
                format!(
                    "SELECT model, {} FROM requests WHERE model IN {list} \
                     AND finished_ms >= ? AND finished_ms < ? GROUP BY model",
                    sums(&raw_counter)
                ),
                from,
                to,
            ),
        };
        let mut params = keys.clone();
        params.extend([Param::Int(from), Param::Int(to)]);
        let into = if *is_minus { &mut minus } else { &mut plus };
        for mut cells in db.select(&sql, &params, &cols)? {
            let counters = counters_of(&cells[1..]);
            let model = std::mem::replace(&mut cells[0], Cell::Int(0)).into_text();
            into.entry(model).or_default().merge(&counters);
        }
    }
    let mut models = BTreeMap::new();
    let mut other = *totals;
    for (model, counters) in plus {
        let counters = counters.saturating_sub(&minus.remove(&model).unwrap_or_default());
        other = other.saturating_sub(&counters);
        if !model.is_empty() && counters.requests > 0 {
            models.insert(model, counters);
        }
    }
    let folded = other.requests;
    if folded > 0 {
        models
            .entry(crate::metrics::stats::OTHER.to_string())
            .or_default()
            .merge(&other);
    }
    Ok((models, folded))
}

/// When the oldest request held finished: the raw rows, or an older rollup bucket (imported
/// history has no raw rows).
fn oldest(db: &mut Db) -> Result<Option<i64>, String> {
    let sql = format!(
        "SELECT (SELECT MIN(finished_ms) FROM requests), (SELECT MIN(bucket) * {BUCKET_MS} FROM {})",
        USAGE_ROLLUPS[1].0
    );
    let cells = db.select(&sql, &[], &[Col::Int, Col::Int])?;
    let Some(row) = cells.first() else {
        return Ok(None);
    };
    // An empty table's MIN is NULL, read as 0: only positive times count.
    Ok(row.iter().map(Cell::int).filter(|ms| *ms > 0).min())
}

/// The `limit` keys of `dim` most recently active in the window, with their counters, and how
/// many requests the keys left out made. See [`most_recent`].
fn recent_keys(
    db: &mut Db,
    dim: Dim,
    since: Option<i64>,
    until: Option<i64>,
    limit: usize,
) -> Result<(Vec<(String, Counters)>, u64), String> {
    let (kept, all) = most_recent(db, Recency::Key(dim.column()), since, until, limit)?;
    let in_kept: u64 = kept.iter().map(|k| k.counters.requests).sum();
    Ok((
        kept.into_iter().map(|k| (k.session, k.counters)).collect(),
        all.saturating_sub(in_kept),
    ))
}

/// The `limit` most recently active sessions of the window, and how many requests all its
/// sessions made. See [`most_recent`].
fn sessions(
    db: &mut Db,
    since: Option<i64>,
    until: Option<i64>,
    limit: usize,
) -> Result<(Vec<SessionUsage>, u64), String> {
    most_recent(db, Recency::Session, since, until, limit)
}

/// A column whose most recently active keys `/stats` keeps.
#[derive(Clone, Copy)]
enum Recency {
    /// One of [`RECENT_DIMENSIONS`](super::db::RECENT_DIMENSIONS), in [`RECENT_ROLLUP`].
    Key(&'static str),
    /// Sessions, in `sessions_15m`.
    Session,
}

impl Recency {
    /// Its name in [`RECENT_KEYS`] and its column in the raw rows.
    fn column(self) -> &'static str {
        match self {
            Recency::Key(column) => column,
            Recency::Session => SESSION_DIMENSION,
        }
    }

    /// A select of `k`, `last_ms` and the counter columns from its rollup over a range of
    /// buckets (two placeholders), whose rows also match `keys` (SQL after the key column).
    fn rollup(self, select: &str, keys: &str) -> String {
        match self {
            Recency::Key(column) => format!(
                "SELECT {select} FROM {RECENT_ROLLUP} WHERE dimension = '{column}' \
                 AND value {keys} AND bucket >= ? AND bucket < ?"
            ),
            Recency::Session => format!(
                "SELECT {select} FROM sessions_15m WHERE session {keys} \
                 AND bucket >= ? AND bucket < ?"
            ),
        }
    }

    fn rollup_table(self) -> &'static str {
        match self {
            Recency::Key(_) => RECENT_ROLLUP,
            Recency::Session => "sessions_15m",
        }
    }

    fn rollup_key(self) -> &'static str {
        match self {
            Recency::Key(_) => "value",
            Recency::Session => "session",
        }
    }
}

/// The `limit` keys most recently active in `[since, until)` (ties by key), each with when it
/// was last active (unix ms) and its counters (the key in `session`), newest first; and how many
/// requests all keys of the window made. Exact to the millisecond: the newest key is never the
/// one left out.
///
/// When nothing was stored at or after `until` (always when there is no `until`), the keys are
/// the first `limit` of [`RECENT_KEYS`] in time order, and only their rollup rows (and the raw
/// rows at the window's edges) are read: the cost does not grow with the number of keys.
/// Otherwise every key of the window is grouped.
fn most_recent(
    db: &mut Db,
    recency: Recency,
    since: Option<i64>,
    until: Option<i64>,
    limit: usize,
) -> Result<(Vec<SessionUsage>, u64), String> {
    let dimension = Param::Text(recency.column().to_string());
    if let Some(until) = until {
        let newest = db.select(
            &format!("SELECT MAX(last_ms) FROM {RECENT_KEYS} WHERE dimension = ?"),
            std::slice::from_ref(&dimension),
            &[Col::Int],
        )?;
        if newest.first().is_some_and(|row| row[0].int() >= until) {
            return most_recent_grouped(db, recency, since, Some(until), limit);
        }
    }
    let newest = db.select(
        &format!(
            "SELECT value, last_ms FROM {RECENT_KEYS} WHERE dimension = ? AND last_ms >= ? \
             ORDER BY last_ms DESC, value LIMIT {limit}"
        ),
        &[dimension, Param::Int(since.unwrap_or(i64::MIN))],
        &[Col::Text, Col::Int],
    )?;
    if newest.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let mut kept: Vec<SessionUsage> = newest
        .into_iter()
        .map(|mut cells| SessionUsage {
            last_ms: cells[1].int(),
            session: std::mem::replace(&mut cells[0], Cell::Int(0)).into_text(),
            counters: Counters::default(),
        })
        .collect();
    let at: HashMap<String, usize> = kept
        .iter()
        .enumerate()
        .map(|(i, key)| (key.session.clone(), i))
        .collect();
    let list = format!("({})", vec!["?"; kept.len()].join(", "));
    let keys: Vec<Param> = kept
        .iter()
        .map(|k| Param::Text(k.session.clone()))
        .collect();
    let sums: Vec<String> = COUNTER_COLUMNS
        .iter()
        .map(|c| format!("SUM(CAST({c} AS DOUBLE PRECISION))"))
        .collect();
    let mut cols = vec![Col::Text];
    cols.extend([Col::Real; COUNTER_COLUMNS.len()]);
    let (mut all, mut all_out) = (0u64, 0u64);
    let mut outside = vec![Counters::default(); kept.len()];
    let levels = [RECENT_DAYS, (recency.rollup_table(), BUCKET_MS)];
    for (piece, minus) in edges(db, since, until, &levels)? {
        // Rollups: the kept keys' rows and the row of all keys. Raw rows: the kept keys by name,
        // all others under "".
        let (sql, rollup, from, to) = match piece {
            Source::Rollup {
                table, from, to, ..
            } => {
                let keys = format!("IN {}", list.replace(')', ", ?)"));
                let sql = if table == RECENT_DAYS.0 {
                    format!(
                        "SELECT value, {} FROM {table} WHERE dimension = '{}' AND value {keys} \
                         AND bucket >= ? AND bucket < ? GROUP BY value",
                        sums.join(", "),
                        recency.column()
                    )
                } else {
                    let key = recency.rollup_key();
                    let select = format!("{key}, {}", sums.join(", "));
                    format!("{} GROUP BY {key}", recency.rollup(&select, &keys))
                };
                (sql, true, from, to)
            }
            Source::Raw(from, to) => {
                let column = recency.column();
                let raw: Vec<String> = COUNTER_COLUMNS
                    .iter()
                    .map(|c| format!("SUM(CAST({} AS DOUBLE PRECISION))", raw_counter(c)))
                    .collect();
                let sql = format!(
                    "SELECT CASE WHEN {column} IN {list} THEN {column} ELSE '' END, {} \
                     FROM requests WHERE finished_ms >= ? AND finished_ms < ? \
                     AND {column} <> '' GROUP BY 1",
                    raw.join(", ")
                );
                (sql, false, from, to)
            }
        };
        let mut params = keys.clone();
        if rollup {
            params.push(Param::Text(ALL_KEYS.to_string()));
        }
        params.extend([Param::Int(from), Param::Int(to)]);
        for cells in db.select(&sql, &params, &cols)? {
            let counters = counters_of(&cells[1..]);
            let key = match &cells[0] {
                Cell::Text(key) => key.as_str(),
                _ => ALL_KEYS,
            };
            if key == ALL_KEYS || !rollup {
                let all = if minus { &mut all_out } else { &mut all };
                *all = all.saturating_add(counters.requests);
            }
            if let Some(&i) = at.get(key) {
                if minus {
                    outside[i].merge(&counters);
                } else {
                    kept[i].counters.merge(&counters);
                }
            }
        }
    }
    for (key, outside) in kept.iter_mut().zip(&outside) {
        key.counters = key.counters.saturating_sub(outside);
    }
    Ok((kept, all.saturating_sub(all_out)))
}

/// [`most_recent`] by grouping every key of the window: whole 15-minute buckets from the rollup,
/// the partial buckets at the edges from the raw rows.
fn most_recent_grouped(
    db: &mut Db,
    recency: Recency,
    since: Option<i64>,
    until: Option<i64>,
    limit: usize,
) -> Result<(Vec<SessionUsage>, u64), String> {
    let column = recency.column();
    let select = format!(
        "{} AS k, last_ms, {}",
        recency.rollup_key(),
        COUNTER_COLUMNS.join(", ")
    );
    // Every key but the row of all keys.
    let rollup = recency.rollup(&select, "<> ''");
    let raw = format!(
        "SELECT {column} AS k, finished_ms AS last_ms, {} FROM requests \
         WHERE finished_ms >= ? AND finished_ms < ? AND {column} <> ''",
        raw_counters()
    );
    let (union, params) = window_union(|_| rollup.clone(), &raw, since, until, &USAGE_ROLLUPS[1..]);
    let all = db
        .select(
            &format!("SELECT SUM(CAST(requests AS DOUBLE PRECISION)) FROM ({union}) AS all_keys"),
            &params,
            &[Col::Real],
        )?
        .first()
        .map_or(0, |c| c[0].real() as u64);
    let sums: Vec<String> = COUNTER_COLUMNS
        .iter()
        .map(|c| format!("SUM(CAST({c} AS DOUBLE PRECISION))"))
        .collect();
    let sql = format!(
        "SELECT k, MAX(last_ms), {} FROM ({union}) AS window_keys \
         GROUP BY k ORDER BY 2 DESC, 1 LIMIT {limit}",
        sums.join(", "),
    );
    let mut cols = vec![Col::Text, Col::Int];
    cols.extend([Col::Real; COUNTER_COLUMNS.len()]);
    let kept = db
        .select(&sql, &params, &cols)?
        .into_iter()
        .map(|mut cells| {
            let counters = counters_of(&cells[2..]);
            let last_ms = cells[1].int();
            SessionUsage {
                session: std::mem::replace(&mut cells[0], Cell::Int(0)).into_text(),
                last_ms,
                counters,
            }
        })
        .collect();
    Ok((kept, all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_parse_into_groups_filters_and_times() {
        let q = UsageQuery::parse(
            "group_by=day,model&since=7d&until=2026-11-27&tz=Europe/Berlin&format=csv&model=claude-",
        )
        .unwrap();
        assert_eq!(q.group_by, vec![Group::Day, Group::Model]);
        assert_eq!(q.format, Format::Csv);
        assert_eq!(q.since, Some(TimeSpec::Ago(7 * 86_400_000)));
        assert_eq!(q.filters.len(), 1);
        assert!(q.filters[0].prefix);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_900_000);
        let (since, until) = q.range(now).unwrap();
        assert_eq!(since, Some(1_795_900_000_000 - 7 * 86_400_000));
        // The date is inclusive: until the end of 27 November in Berlin (UTC+1).
        assert_eq!(until, Some(1_795_820_400_000));
    }

    #[test]
    fn bad_query_strings_say_what_is_wrong() {
        for (query, needle) in [
            ("group_by=day,model,caller", "at most two"),
            ("group_by=fortnight", "fortnight"),
            ("group_by=day,day", "twice"),
            ("since=yesterday", "since `yesterday`"),
            ("tz=Mars/Olympus", "Mars/Olympus"),
            ("format=xml", "xml"),
            ("colour=blue", "unknown parameter `colour`"),
            ("caller=a&caller=b", "more than once"),
            ("limit=0", "limit `0`"),
            ("limit=50001", "1 to 50000"),
            ("limit=many", "limit `many`"),
        ] {
            let err = UsageQuery::parse(query).unwrap_err();
            assert!(err.contains(needle), "{query}: {err}");
        }
        let q = UsageQuery::parse("since=2026-11-28&until=2026-11-27").unwrap();
        assert!(q.range(SystemTime::now()).is_err());
    }

    #[test]
    fn blocks_start_at_the_hour_of_their_first_request_and_last_five_hours() {
        let hour = HOUR_BUCKETS;
        // 10:15, 11:00, 14:45 are one block from 10:00; 15:00 starts the next at 15:00;
        // 21:30 after a gap starts one at 21:00.
        let buckets = [
            10 * hour + 1,
            11 * hour,
            14 * hour + 3,
            15 * hour,
            21 * hour + 2,
        ];
        let starts = block_starts(&buckets);
        assert_eq!(starts[&buckets[0]], 10 * hour);
        assert_eq!(starts[&buckets[1]], 10 * hour);
        assert_eq!(starts[&buckets[2]], 10 * hour);
        assert_eq!(starts[&buckets[3]], 15 * hour);
        assert_eq!(starts[&buckets[4]], 21 * hour);
    }

    #[test]
    fn windows_split_into_whole_days_then_buckets_then_raw_edges() {
        let (b, d) = (BUCKET_MS, super::super::db::DAY_MS);
        let rollup = |table, width, from, to| Source::Rollup {
            table,
            width,
            from,
            to,
        };
        assert_eq!(
            pieces(Some(d - b - 5), Some(3 * d + 2 * b + 7), &USAGE_ROLLUPS),
            vec![
                rollup("usage_1d", d, 1, 3),
                rollup("usage_15m", b, d / b - 1, d / b),
                Source::Raw(d - b - 5, d - b),
                rollup("usage_15m", b, 3 * d / b, 3 * d / b + 2),
                Source::Raw(3 * d + 2 * b, 3 * d + 2 * b + 7),
            ]
        );
        assert_eq!(
            pieces(Some(b + 5), Some(4 * b + 7), &USAGE_ROLLUPS),
            vec![
                rollup("usage_15m", b, 2, 4),
                Source::Raw(b + 5, 2 * b),
                Source::Raw(4 * b, 4 * b + 7),
            ]
        );
        assert_eq!(
            pieces(Some(b + 5), Some(b + 9), &USAGE_ROLLUPS),
            vec![Source::Raw(b + 5, b + 9)]
        );
        assert!(matches!(
            pieces(None, None, &USAGE_ROLLUPS)[..],
            [Source::Rollup {
                table: "usage_1d",
                ..
            }]
        ));
    }

    #[test]
    fn usage_csv_and_json_escape_terminal_controls_and_defuse_formulas_after_whitespace() {
        let names = [
            "evil\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2J\rok\u{202e}",
            "\t=cmd|' /C calc'!A0",
            " +1",
        ];
        let report = UsageReport {
            since: None,
            until: None,
            group_by: vec![Group::Model],
            rows: names
                .iter()
                .map(|name| UsageRow {
                    keys: vec![KeyValue::Text(name.to_string())],
                    counters: Counters::default(),
                })
                .collect(),
            totals: Counters::default(),
            truncated: false,
            rows_read: 0,
        };
        let (_, csv) = report.render(Format::Csv);
        assert!(
            !csv.contains(|c: char| c != '\n' && printable::must_escape(c)),
            "{csv:?}"
        );
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4, "{csv}");
        assert!(lines[1].starts_with("evil\\u{1b}]52;"), "{csv}");
        assert!(lines[2].starts_with("\"'\\t=cmd"), "{csv}");
        assert!(lines[3].starts_with("\"' +1\""), "{csv}");

        let (_, json) = report.render(Format::Json);
        assert!(!json.contains(printable::must_escape), "{json:?}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["rows"][0]["model"], names[0]);
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("claude"), "claude");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "\"'=cmd()\"");
    }
}
