//! The store against real databases: SQLite files in temporary directories, and PostgreSQL when
//! `SLUICE_TEST_PG_URL` names a server (`scripts/pg-test-server.sh start`; those tests are
//! ignored by default). `/usage` and `/stats` windows are checked against sums computed here,
//! independently of the store's own arithmetic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jiff::civil::{ISOWeekDate, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::Value;
use sluice::quotas::{Ledger, QuotaFile};
use sluice::store::{self, StoreError, StoreHandle, StoreOptions, StoreRow, Target, UsageQuery};

#[path = "support/pg.rs"]
mod pg;

use pg::{pg_database, PG_IGNORED};

/// A small deterministic generator, so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn ms(rfc3339: &str) -> i64 {
    rfc3339.parse::<Timestamp>().unwrap().as_millisecond()
}

/// Random rows over `[from, to)`.
fn random_rows(rng: &mut Rng, count: usize, from: i64, to: i64) -> Vec<StoreRow> {
    (0..count)
        .map(|_| {
            let status = [200, 200, 200, 200, 429, 500, 401][rng.below(7) as usize];
            StoreRow {
                finished_ms: from + rng.below((to - from) as u64) as i64,
                instance: "test".into(),
                route: rng.pick(&["/anthropic", "/anthropic", "/other"]).into(),
                method: "POST".into(),
                status,
                outcome: rng
                    .pick(&[
                        "completed",
                        "completed",
                        "client_gone",
                        "upstream_cut",
                        "bad_path",
                        "shutdown",
                        "upstream_error_event",
                    ])
                    .into(),
                streamed: rng.below(2) == 0,
                model: rng
                    .pick(&[
                        "claude-sonnet-4-5",
                        "claude-sonnet-4-5-20250929",
                        "claude-opus-4-1",
                        "claude-haiku-4-5",
                        "",
                    ])
                    .into(),
                source: rng
                    .pick(&["client_oauth", "client_api_key", "server_key", "none"])
                    .into(),
                credential: rng
                    .pick(&[
                        "client_oauth:3fa29c1b4d5e",
                        "client_api_key:0123456789ab",
                        "",
                    ])
                    .into(),
                caller: rng.pick(&["alice", "bob", ""]).into(),
                session: rng
                    .pick(&["s-1", "s-2", "s-3", "s-4", "s-5", "s-6", "s-7", ""])
                    .into(),
                agent: rng.pick(&["", "", "agent-a", "agent-b"]).into(),
                parent_agent: String::new().into(),
                project: rng.pick(&["", "sluice", "web"]).into(),
                provider: rng
                    .pick(&["anthropic", "anthropic", "openai", "none"])
                    .into(),
                client: rng
                    .pick(&["claude-code", "codex", "openai-sdk-python", "other", ""])
                    .into(),
                input_tokens: rng.below(5000),
                output_tokens: rng.below(2000),
                reasoning_output_tokens: rng.below(500),
                usage_missing: rng.below(8) == 0,
                cache_write_5m_tokens: rng.below(300),
                cache_write_1h_tokens: rng.below(100),
                cache_read_tokens: rng.below(10_000),
                web_search_requests: rng.below(3),
                cost_usd: rng.below(1_000_000) as f64 / 1e7,
                ttfb_ms: Some(rng.below(2000)),
                total_ms: rng.below(60_000),
                overhead_ms: None,
            }
        })
        .collect()
}

fn sqlite_options(dir: &Path) -> StoreOptions {
    let mut options = StoreOptions::new(Target::Sqlite(dir.join("state/sluice.db")));
    options.commit_interval = Duration::from_millis(50);
    options.close_timeout = Duration::from_secs(2);
    options
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

fn wait_written(store: &StoreHandle, rows: u64) {
    assert!(
        wait_until(Duration::from_secs(20), || store.status().rows_written
            >= rows),
        "rows not written: {:?}",
        store.status()
    );
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn usage(store: &StoreHandle, query: &str) -> Value {
    let q = UsageQuery::parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    store.usage(&q, now()).unwrap().to_json()
}

fn total_requests(store: &StoreHandle) -> u64 {
    usage(store, "")["totals"]["requests"].as_u64().unwrap()
}

fn raw_row_count(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Independent arithmetic for the checks.

#[derive(Default, Debug, Clone)]
struct Sums {
    requests: u64,
    errors: u64,
    streamed: u64,
    incomplete: u64,
    input: u64,
    output: u64,
    cache_creation: u64,
    cache_read: u64,
    web_search: u64,
    reasoning: u64,
    usage_missing: u64,
    cost: f64,
}

impl Sums {
    fn merge(&mut self, other: &Sums) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.streamed += other.streamed;
        self.incomplete += other.incomplete;
        self.input += other.input;
        self.output += other.output;
        self.cache_creation += other.cache_creation;
        self.cache_read += other.cache_read;
        self.web_search += other.web_search;
        self.reasoning += other.reasoning;
        self.usage_missing += other.usage_missing;
        self.cost += other.cost;
    }

    fn add(&mut self, row: &StoreRow) {
        self.requests += 1;
        self.errors += (row.status >= 400 || row.outcome == "upstream_error_event") as u64;
        self.streamed += row.streamed as u64;
        self.incomplete += [
            "client_gone",
            "client_stalled",
            "upstream_cut",
            "idle_timeout",
            "shutdown",
        ]
        .contains(&row.outcome.as_str()) as u64;
        self.input += row.input_tokens;
        self.output += row.output_tokens;
        self.cache_creation += row.cache_write_5m_tokens + row.cache_write_1h_tokens;
        self.cache_read += row.cache_read_tokens;
        self.web_search += row.web_search_requests;
        self.reasoning += row.reasoning_output_tokens;
        self.usage_missing += row.usage_missing as u64;
        self.cost += row.cost_usd;
    }

    fn assert_matches(&self, got: &Value, what: &str) {
        let field = |name: &str| {
            got[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{what}: no {name} in {got}"))
        };
        assert_eq!(
            [
                field("requests"),
                field("errors"),
                field("streamed"),
                field("incomplete"),
                field("input_tokens"),
                field("output_tokens"),
                field("cache_creation_input_tokens"),
                field("cache_read_input_tokens"),
                field("web_search_requests"),
                field("reasoning_output_tokens"),
                field("usage_missing"),
            ],
            [
                self.requests,
                self.errors,
                self.streamed,
                self.incomplete,
                self.input,
                self.output,
                self.cache_creation,
                self.cache_read,
                self.web_search,
                self.reasoning,
                self.usage_missing,
            ],
            "{what}"
        );
        let cost = got["cost_usd"].as_f64().unwrap();
        assert!(
            (cost - self.cost).abs() < 1e-6,
            "{what}: cost {cost} != {}",
            self.cost
        );
    }
}

const LOCAL: &str = "%Y-%m-%dT%H:%M:%S%:z";

fn local_label(at_ms: i64, tz: &TimeZone) -> String {
    Timestamp::from_millisecond(at_ms)
        .unwrap()
        .to_zoned(tz.clone())
        .strftime(LOCAL)
        .to_string()
}

/// The key a row has in a time group, computed by offset arithmetic and ISO weeks rather than
/// the way the store does it.
fn expected_time_key(group: &str, at_ms: i64, tz: &TimeZone) -> String {
    let ts = Timestamp::from_millisecond(at_ms).unwrap();
    let date = ts.to_zoned(tz.clone()).date();
    match group {
        "hour" => {
            let offset_ms = i64::from(tz.to_offset(ts).seconds()) * 1000;
            let local = at_ms + offset_ms;
            local_label(local - local.rem_euclid(3_600_000) - offset_ms, tz)
        }
        "day" => format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()),
        "week" => {
            let iso = date.iso_week_date();
            let monday = ISOWeekDate::new(iso.year(), iso.week(), Weekday::Monday)
                .unwrap()
                .date();
            monday.to_string()
        }
        "month" => format!("{:04}-{:02}", date.year(), date.month()),
        other => panic!("not a time group: {other}"),
    }
}

fn expected_key(group: &str, row: &StoreRow, tz: &TimeZone, blocks: &BTreeMap<i64, i64>) -> String {
    match group {
        "hour" | "day" | "week" | "month" => expected_time_key(group, row.finished_ms, tz),
        "block" => local_label(blocks[&row.finished_ms], tz),
        "session" => row.session.to_string(),
        "caller" => row.caller.to_string(),
        "model" => row.model.to_string(),
        "credential" => row.credential.to_string(),
        "source" => row.source.to_string(),
        "route" => row.route.to_string(),
        "agent" => row.agent.to_string(),
        "project" => row.project.to_string(),
        "status" => row.status.to_string(),
        "provider" => row.provider.to_string(),
        "client" => row.client.to_string(),
        other => panic!("unknown group {other}"),
    }
}

/// ccusage's blocks over the rows' times: a block starts at the UTC hour of its first request
/// and lasts 5 hours. Maps each time to its block's start.
fn expected_blocks(rows: &[&StoreRow]) -> BTreeMap<i64, i64> {
    let mut times: Vec<i64> = rows.iter().map(|r| r.finished_ms).collect();
    times.sort_unstable();
    let mut out = BTreeMap::new();
    let mut block: Option<i64> = None;
    for t in times {
        let start = match block {
            Some(start) if t < start + 5 * 3_600_000 => start,
            _ => t - t.rem_euclid(3_600_000),
        };
        block = Some(start);
        out.insert(t, start);
    }
    out
}

/// Checks one `/usage` query against sums over `rows` computed here.
fn check_usage(store: &StoreHandle, rows: &[StoreRow], tz_name: &str, params: &[(&str, &str)]) {
    let tz = TimeZone::get(tz_name).unwrap();
    let mut query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    query.push(format!("tz={tz_name}"));
    let query = query.join("&");
    let got = usage(store, &query);

    let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let groups: Vec<&str> = param("group_by").map_or(vec![], |g| g.split(',').collect());
    let bound = |name: &str| {
        param(name).map(|v| {
            if v.len() == 10 {
                let date: jiff::civil::Date = v.parse().unwrap();
                let date = if name == "until" {
                    date.tomorrow().unwrap()
                } else {
                    date
                };
                date.to_zoned(tz.clone())
                    .unwrap()
                    .timestamp()
                    .as_millisecond()
            } else {
                ms(v)
            }
        })
    };
    let (since, until) = (bound("since"), bound("until"));
    let selected: Vec<&StoreRow> = rows
        .iter()
        .filter(|r| since.map_or(true, |s| r.finished_ms >= s))
        .filter(|r| until.map_or(true, |u| r.finished_ms < u))
        .filter(|r| param("caller").map_or(true, |c| r.caller == c))
        .filter(|r| param("model").map_or(true, |m| r.model.starts_with(m)))
        .filter(|r| param("route").map_or(true, |v| r.route == v))
        .filter(|r| param("source").map_or(true, |v| r.source == v))
        .filter(|r| param("credential").map_or(true, |v| r.credential == v))
        .filter(|r| param("session").map_or(true, |v| r.session == v))
        .filter(|r| param("project").map_or(true, |v| r.project == v))
        .filter(|r| param("provider").map_or(true, |v| r.provider == v))
        .filter(|r| param("client").map_or(true, |v| r.client == v))
        .collect();
    let blocks = expected_blocks(&selected);
    let mut expected: BTreeMap<Vec<String>, Sums> = BTreeMap::new();
    let mut totals = Sums::default();
    for row in &selected {
        let key = groups
            .iter()
            .map(|g| expected_key(g, row, &tz, &blocks))
            .collect();
        expected.entry(key).or_default().add(row);
        totals.add(row);
    }
    totals.assert_matches(&got["totals"], &format!("{query}: totals"));
    let got_rows = got["rows"].as_array().unwrap();
    assert_eq!(got_rows.len(), expected.len(), "{query}: row count");
    for row in got_rows {
        let key: Vec<String> = groups
            .iter()
            .map(|g| match &row[*g] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let sums = expected.get(&key).unwrap_or_else(|| {
            panic!(
                "{query}: unexpected row {key:?}; expected keys {:?}",
                expected.keys()
            )
        });
        sums.assert_matches(row, &format!("{query}: {key:?}"));
    }
    assert!(!selected.is_empty(), "{query}: the check selected no rows");
}

fn fill(store: &StoreHandle, rows: &[StoreRow]) {
    let before = store.status().rows_written;
    for chunk in rows.chunks(700) {
        store.submit(chunk.to_vec());
    }
    wait_written(store, before + rows.len() as u64);
}

/// Rows around both 2026 DST changes in Europe (29 March, 25 October).
fn dst_rows() -> Vec<StoreRow> {
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut rows = random_rows(
        &mut rng,
        1500,
        ms("2026-03-26T00:00:00Z"),
        ms("2026-04-02T00:00:00Z"),
    );
    rows.extend(random_rows(
        &mut rng,
        1500,
        ms("2026-10-22T00:00:00Z"),
        ms("2026-10-28T00:00:00Z"),
    ));
    rows
}

fn check_usage_suite(store: &StoreHandle, rows: &[StoreRow]) {
    for tz in ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns"] {
        check_usage(store, rows, tz, &[("group_by", "day,model")]);
        check_usage(
            store,
            rows,
            tz,
            &[
                ("group_by", "hour"),
                ("since", "2026-10-24T22:07:13.5Z"),
                ("until", "2026-10-25T04:52:01Z"),
            ],
        );
        check_usage(
            store,
            rows,
            tz,
            &[("group_by", "week,caller"), ("model", "claude-sonnet")],
        );
        check_usage(store, rows, tz, &[("group_by", "month,status")]);
        check_usage(store, rows, tz, &[("group_by", "block")]);
        check_usage(
            store,
            rows,
            tz,
            &[("group_by", "block,model"), ("caller", "alice")],
        );
        check_usage(
            store,
            rows,
            tz,
            &[
                ("group_by", "day"),
                ("since", "2026-03-28"),
                ("until", "2026-03-30"),
            ],
        );
    }
    check_usage(
        store,
        rows,
        "UTC",
        &[("group_by", "session"), ("since", "2026-10-23T05:05:05Z")],
    );
    check_usage(store, rows, "UTC", &[("group_by", "agent,project")]);
    check_usage(
        store,
        rows,
        "UTC",
        &[("group_by", "source,credential"), ("route", "/anthropic")],
    );
    check_usage(
        store,
        rows,
        "Europe/Berlin",
        &[("group_by", "day"), ("session", "s-3")],
    );
    check_usage(
        store,
        rows,
        "UTC",
        &[
            ("project", "web"),
            ("credential", "client_oauth:3fa29c1b4d5e"),
        ],
    );
    check_usage(
        store,
        rows,
        "UTC",
        &[("group_by", "route"), ("source", "none")],
    );
    // Provider and client: on their own from the marginal rollups, with another column from
    // the raw rows.
    for tz in ["UTC", "Asia/Kolkata"] {
        check_usage(store, rows, tz, &[("group_by", "day,provider")]);
        check_usage(store, rows, tz, &[("group_by", "client")]);
        check_usage(
            store,
            rows,
            tz,
            &[
                ("group_by", "hour,client"),
                ("since", "2026-10-24T22:07:13.5Z"),
                ("until", "2026-10-25T04:52:01Z"),
            ],
        );
    }
    check_usage(
        store,
        rows,
        "UTC",
        &[("group_by", "day"), ("provider", "anthropic")],
    );
    check_usage(
        store,
        rows,
        "UTC",
        &[("group_by", "provider,client"), ("model", "claude-sonnet")],
    );
    // (Rows written before clients were known have none.)
    if rows.iter().any(|r| r.client == "codex") {
        check_usage(
            store,
            rows,
            "UTC",
            &[
                ("group_by", "model"),
                ("client", "codex"),
                ("provider", "openai"),
            ],
        );
    }
}

/// `/stats` window groups against sums computed here: complete groups, and the groups clients
/// can grow holding only the `LIMIT` most recently active keys.
fn check_window(store: &StoreHandle, rows: &[StoreRow], since: Option<i64>, until: Option<i64>) {
    const LIMIT: usize = 3;
    let window = store.window(since, until, LIMIT, LIMIT).unwrap();
    let window = serde_json::to_value(&window).unwrap();
    let selected: Vec<&StoreRow> = rows
        .iter()
        .filter(|r| {
            since.map_or(true, |s| r.finished_ms >= s) && until.map_or(true, |u| r.finished_ms < u)
        })
        .collect();
    let mut totals = Sums::default();
    let mut groups: BTreeMap<(&str, String), Sums> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    // Group → key → (last finished, sums).
    let mut recent: BTreeMap<&str, BTreeMap<String, (i64, Sums)>> = BTreeMap::new();
    for row in &selected {
        totals.add(row);
        for (group, key) in [
            ("by_route", &row.route),
            ("by_model", &row.model),
            ("by_source", &row.source),
            ("by_caller", &row.caller),
            ("by_provider", &row.provider),
            ("by_client", &row.client),
        ] {
            if !key.is_empty() {
                groups.entry((group, key.to_string())).or_default().add(row);
            }
        }
        *statuses.entry(row.status.to_string()).or_default() += 1;
        for (group, key) in [
            ("by_credential", &row.credential),
            ("by_project", &row.project),
            ("by_agent", &row.agent),
            ("by_session", &row.session),
        ] {
            if !key.is_empty() {
                let entry = recent
                    .entry(group)
                    .or_default()
                    .entry(key.to_string())
                    .or_default();
                entry.0 = entry.0.max(row.finished_ms);
                entry.1.add(row);
            }
        }
    }
    let what = format!("window {since:?}..{until:?}");
    totals.assert_matches(&window["totals"], &what);
    // Models: the LIMIT with the most requests (then by name), the others under "other".
    let mut models: Vec<(String, Sums)> = groups
        .iter()
        .filter(|((g, _), _)| *g == "by_model")
        .map(|((_, k), s)| (k.clone(), s.clone()))
        .collect();
    models.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(&b.0)));
    let mut other: Option<Sums> = None;
    for (model, sums) in models.iter().skip(LIMIT) {
        groups.remove(&("by_model", model.clone()));
        other.get_or_insert_with(Sums::default).merge(sums);
    }
    assert_eq!(
        window["folded"]["by_model"],
        other.as_ref().map_or(0, |o| o.requests),
        "{what} models folded"
    );
    if let Some(other) = other {
        groups.insert(("by_model", "other".into()), other);
    }
    for ((group, key), sums) in &groups {
        sums.assert_matches(&window[group][key], &format!("{what} {group} {key}"));
    }
    for group in [
        "by_route",
        "by_model",
        "by_source",
        "by_caller",
        "by_provider",
        "by_client",
    ] {
        let expected = groups.keys().filter(|(g, _)| *g == group).count();
        assert_eq!(
            window[group].as_object().unwrap().len(),
            expected,
            "{what} {group}"
        );
    }
    assert_eq!(
        window["by_status"],
        serde_json::to_value(&statuses).unwrap(),
        "{what}"
    );
    for group in ["by_credential", "by_project", "by_agent", "by_session"] {
        let keys = recent.remove(group).unwrap_or_default();
        let mut newest: Vec<(&String, &(i64, Sums))> = keys.iter().collect();
        newest.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
        let left_out: u64 = newest
            .iter()
            .skip(LIMIT)
            .map(|(_, (_, s))| s.requests)
            .sum();
        newest.truncate(LIMIT);
        let got = window[group].as_object().unwrap();
        assert_eq!(got.len(), newest.len(), "{what} {group}");
        for (name, (_, sums)) in newest {
            sums.assert_matches(&got[name.as_str()], &format!("{what} {group} {name}"));
        }
        assert_eq!(window["folded"][group], left_out, "{what} {group} folded");
    }
}

fn check_window_suite(store: &StoreHandle, rows: &[StoreRow]) {
    check_window(store, rows, None, None);
    check_window(store, rows, Some(ms("2026-10-24T13:07:00.250Z")), None);
    check_window(
        store,
        rows,
        Some(ms("2026-03-28T23:59:59Z")),
        Some(ms("2026-03-29T03:01:00Z")),
    );
    check_window(
        store,
        rows,
        Some(ms("2026-03-30T10:00:00Z")),
        Some(ms("2026-03-30T10:10:00Z")),
    );
}

// ---------------------------------------------------------------------------------------------
// SQLite

#[test]
fn usage_matches_independent_sums_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(sqlite_options(dir.path())).unwrap();
    let rows = dst_rows();
    fill(&store, &rows);
    check_usage_suite(&store, &rows);
    check_window_suite(&store, &rows);
    store.close().unwrap();
}

/// Takes a store back to its fourth schema version: no provider, client, reasoning tokens or
/// streams without usage.
fn undo_providers_and_new_counters(conn: &rusqlite::Connection) {
    conn.execute_batch(&undo_providers_sql()).unwrap();
}

/// The SQL (SQLite's and PostgreSQL's alike) that takes a store back to its fourth version.
fn undo_providers_sql() -> String {
    let mut sql = String::new();
    for table in [
        "requests",
        "usage_15m",
        "usage_1d",
        "usage_by_15m",
        "usage_by_1d",
        "sessions_15m",
        "recent_15m",
        "recent_1d",
    ] {
        for column in ["reasoning_output_tokens", "usage_missing"] {
            sql.push_str(&format!("ALTER TABLE {table} DROP COLUMN {column};"));
        }
    }
    sql.push_str(
        "ALTER TABLE requests DROP COLUMN provider; ALTER TABLE requests DROP COLUMN client; \
         DELETE FROM usage_by_15m WHERE dimension IN ('provider', 'client'); \
         DELETE FROM usage_by_1d WHERE dimension IN ('provider', 'client'); \
         DELETE FROM store_schema WHERE version > 4;",
    );
    sql
}

/// The rows as a sluice before providers and clients wrote them, as the migration reads them
/// back: no client, no reasoning tokens, no streams without usage; provider `anthropic` on a
/// route that has rows with a model (only `anthropic` routes read one then), else `none`.
fn as_before_providers(rows: &[StoreRow]) -> Vec<StoreRow> {
    let metered: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| !r.model.is_empty())
        .map(|r| r.route.as_str())
        .collect();
    rows.iter()
        .map(|row| StoreRow {
            provider: match row.route.as_str() {
                "" => "",
                route if metered.contains(route) => "anthropic",
                _ => "none",
            }
            .into(),
            client: String::new().into(),
            reasoning_output_tokens: 0,
            usage_missing: false,
            ..row.clone()
        })
        .collect()
}

#[test]
fn a_store_from_before_providers_reads_them_from_its_routes() {
    let dir = tempfile::tempdir().unwrap();
    let options = sqlite_options(dir.path());
    let Target::Sqlite(path) = options.target.clone() else {
        unreachable!()
    };
    store_from_before_providers_reads_them_from_its_routes(options.clone(), || {
        undo_providers_and_new_counters(&rusqlite::Connection::open(&path).unwrap())
    });
}

#[test]
#[ignore = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)"]
fn a_postgres_store_from_before_providers_reads_them_from_its_routes() {
    let url = pg_database();
    store_from_before_providers_reads_them_from_its_routes(pg_options(&url), || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.batch_execute(&undo_providers_sql()).unwrap();
    });
}

fn store_from_before_providers_reads_them_from_its_routes(
    options: StoreOptions,
    undo: impl FnOnce(),
) {
    let mut rows = dst_rows();
    // A route that never read a model (protocol "none"), and requests no route took.
    for (i, row) in rows.iter_mut().enumerate() {
        match i % 10 {
            0 => {
                row.route = "/plain".into();
                row.model = String::new().into();
            }
            1 => {
                row.route = String::new().into();
                row.model = String::new().into();
            }
            _ => {}
        }
    }
    let store = store::open(options.clone()).unwrap();
    fill(&store, &rows);
    store.close().unwrap();
    drop(store);
    undo();
    let old = as_before_providers(&rows);
    assert!(old.iter().any(|r| r.provider == "none"));
    assert!(old.iter().any(|r| r.provider.is_empty()));
    let store = store::open(options).unwrap();
    check_usage_suite(&store, &old);
    check_window_suite(&store, &old);
    // What is written after the migration keeps its provider and client.
    let mut rng = Rng(77);
    let new = random_rows(
        &mut rng,
        300,
        ms("2026-10-27T00:00:00Z"),
        ms("2026-10-28T00:00:00Z"),
    );
    fill(&store, &new);
    let mut all = old;
    all.extend(new);
    check_usage_suite(&store, &all);
    check_window_suite(&store, &all);
    store.close().unwrap();
}

#[test]
fn a_store_from_before_the_recency_rollup_gets_it_from_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let options = sqlite_options(dir.path());
    let Target::Sqlite(path) = options.target.clone() else {
        unreachable!()
    };
    let rows = dst_rows();
    let store = store::open(options).unwrap();
    fill(&store, &rows);
    store.close().unwrap();
    drop(store);
    // As the first schema version left it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    undo_providers_and_new_counters(&conn);
    let rows = as_before_providers(&rows);
    conn.execute_batch(
        "DROP TABLE recent_15m; DROP TABLE rate_limits; DROP TABLE recent_keys; \
         DROP TABLE recent_1d; DROP TABLE usage_by_1d; DROP INDEX sessions_15m_by_key; \
         DROP INDEX usage_by_15m_by_dimension; DELETE FROM sessions_15m WHERE session = ''; \
         DELETE FROM store_schema WHERE version > 1;",
    )
    .unwrap();
    drop(conn);
    let store = store::open(sqlite_options(dir.path())).unwrap();
    check_window_suite(&store, &rows);
    store.close().unwrap();
}

#[test]
fn a_store_from_before_the_recent_keys_gets_them_from_its_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let options = sqlite_options(dir.path());
    let Target::Sqlite(path) = options.target.clone() else {
        unreachable!()
    };
    let rows = dst_rows();
    let store = store::open(options).unwrap();
    fill(&store, &rows);
    store.close().unwrap();
    drop(store);
    // As the third schema version left it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    undo_providers_and_new_counters(&conn);
    let rows = as_before_providers(&rows);
    conn.execute_batch(
        "DROP TABLE recent_keys; DROP TABLE recent_1d; DROP TABLE usage_by_1d; \
         DROP INDEX recent_15m_by_key; DROP INDEX sessions_15m_by_key; \
         DROP INDEX usage_by_15m_by_dimension; DELETE FROM recent_15m WHERE value = ''; \
         DELETE FROM sessions_15m WHERE session = ''; DELETE FROM store_schema WHERE version > 3;",
    )
    .unwrap();
    drop(conn);
    let store = store::open(sqlite_options(dir.path())).unwrap();
    check_usage_suite(&store, &rows);
    check_window_suite(&store, &rows);
    store.close().unwrap();
}

/// A window starting just before a burst of thousands of requests in one 15-minute bucket is read
/// as that bucket's rollup less the few rows before the start: the sums stay exact.
#[test]
fn a_burst_just_after_a_window_starts_is_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(sqlite_options(dir.path())).unwrap();
    let mut rng = Rng(11);
    let bucket = ms("2026-11-20T10:00:00Z");
    let mut rows = random_rows(&mut rng, 40, bucket, bucket + 300_000);
    rows.extend(random_rows(
        &mut rng,
        3_000,
        bucket + 300_000,
        bucket + 600_000,
    ));
    rows.extend(random_rows(
        &mut rng,
        40,
        bucket + 600_000,
        bucket + 900_000,
    ));
    // Many keys later that day: the rest of the day is then read as the whole day less its start.
    let mut later = random_rows(&mut rng, 600, bucket + 900_000, bucket + 2_700_000);
    for (i, row) in later.iter_mut().enumerate() {
        row.session = format!("later-{i}").into();
        row.model = format!("later-model-{i}").into();
    }
    rows.extend(later);
    // Keys seen only before the window (left out) and only in the burst (most recent).
    rows[0].session = "before-only".into();
    rows[0].credential = "client_api_key:before000000".into();
    rows[0].model = "model-before-only".into();
    for (i, row) in rows.iter_mut().enumerate().skip(40).step_by(7) {
        row.session = format!("burst-{i}").into();
        row.model = format!("burst-model-{}", i % 5).into();
    }
    fill(&store, &rows);
    for (since, until) in [
        (bucket + 299_999, None),
        (bucket + 299_999, Some(bucket + 86_400_000)),
        (bucket + 299_999, Some(bucket + 700_000)),
        (bucket + 10, Some(bucket + 899_990)),
    ] {
        check_window(&store, &rows, Some(since), until);
        let since_text = jiff::Timestamp::from_millisecond(since)
            .unwrap()
            .to_string();
        let mut params = vec![("group_by", "model"), ("since", since_text.as_str())];
        let until_text = until.map(|u| jiff::Timestamp::from_millisecond(u).unwrap().to_string());
        if let Some(until) = &until_text {
            params.push(("until", until.as_str()));
        }
        check_usage(&store, &rows, "UTC", &params);
    }
    store.close().unwrap();
}

#[test]
fn usage_answers_csv_with_the_same_columns() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(sqlite_options(dir.path())).unwrap();
    let rows = dst_rows();
    fill(&store, &rows);
    let q = UsageQuery::parse("group_by=day,model&format=csv&since=2026-10-24&until=2026-10-25")
        .unwrap();
    let report = store.usage(&q, now()).unwrap();
    let (content_type, body) = report.render(q.format);
    assert!(content_type.starts_with("text/csv"));
    let mut lines = body.lines();
    assert_eq!(
        lines.next().unwrap(),
        "day,model,requests,errors,streamed,incomplete,input_tokens,output_tokens,\
         cache_creation_input_tokens,cache_read_input_tokens,web_search_requests,cost_usd,\
         reasoning_output_tokens,usage_missing"
    );
    let json = report.to_json();
    let json_rows = json["rows"].as_array().unwrap();
    let csv_rows: Vec<&str> = lines.collect();
    assert_eq!(csv_rows.len(), json_rows.len());
    for (line, row) in csv_rows.iter().zip(json_rows) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], row["day"].as_str().unwrap());
        assert_eq!(fields[1], row["model"].as_str().unwrap_or(""));
        assert_eq!(fields[2], row["requests"].to_string());
        assert_eq!(
            fields[11].parse::<f64>().unwrap(),
            row["cost_usd"].as_f64().unwrap()
        );
        assert_eq!(fields[12], row["reasoning_output_tokens"].to_string());
        assert_eq!(fields[13], row["usage_missing"].to_string());
    }
    store.close().unwrap();
}

#[test]
fn rows_survive_a_restart_and_are_committed_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = sqlite_options(dir.path());
    options.commit_interval = Duration::from_millis(250);
    let path = dir.path().join("state/sluice.db");
    let store = store::open(options.clone()).unwrap();
    let rows = random_rows(
        &mut Rng(7),
        500,
        ms("2026-11-20T00:00:00Z"),
        ms("2026-11-27T00:00:00Z"),
    );
    store.submit(rows.clone());
    // Read by another connection, without closing: the writer commits at least once a second.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(raw_row_count(&path), 500);
    let status = store.status();
    assert_eq!(
        (status.rows_written, status.pending, status.failures),
        (500, 0, 0)
    );
    assert!(status.last_commit.is_some());
    store.close().unwrap();
    drop(store);

    let store = store::open(options).unwrap();
    assert_eq!(total_requests(&store), 500);
    check_usage(&store, &rows, "UTC", &[("group_by", "day,model")]);
    store.close().unwrap();
}

#[test]
fn a_locked_database_delays_writes_visibly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sluice.db");
    let store = store::open(sqlite_options(dir.path())).unwrap();
    let mut rng = Rng(11);
    let first = random_rows(
        &mut rng,
        100,
        ms("2026-11-20T00:00:00Z"),
        ms("2026-11-27T00:00:00Z"),
    );
    fill(&store, &first);

    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let second = random_rows(
        &mut rng,
        100,
        ms("2026-11-20T00:00:00Z"),
        ms("2026-11-27T00:00:00Z"),
    );
    store.submit(second.clone());
    assert!(wait_until(Duration::from_secs(10), || store
        .status()
        .failures
        >= 2));
    let status = store.status();
    assert!(status.failing, "{status:?}");
    assert_eq!(status.pending, 100);
    assert!(
        status.last_error.as_deref().unwrap().contains("locked"),
        "{status:?}"
    );
    assert_eq!(status.rows_written, 100);

    locker.execute_batch("COMMIT").unwrap();
    wait_written(&store, 200);
    let status = store.status();
    assert!(!status.failing && status.pending == 0, "{status:?}");
    assert_eq!(raw_row_count(&path), 200);
    let all: Vec<StoreRow> = first.into_iter().chain(second).collect();
    check_usage(&store, &all, "UTC", &[("group_by", "caller")]);
    store.close().unwrap();
}

#[test]
fn a_full_disk_delays_writes_visibly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sluice.db");
    let pages = Arc::new(AtomicU64::new(0));
    let mut options = sqlite_options(dir.path());
    options.sqlite_max_pages = Some(pages.clone());
    let store = store::open(options).unwrap();
    let mut rng = Rng(13);
    let first = random_rows(
        &mut rng,
        200,
        ms("2026-11-20T00:00:00Z"),
        ms("2026-11-27T00:00:00Z"),
    );
    fill(&store, &first);

    // No page beyond those the file has now: the next batch finds the disk full.
    pages.store(1, Ordering::Relaxed);
    let second = random_rows(
        &mut rng,
        2000,
        ms("2026-11-20T00:00:00Z"),
        ms("2026-11-27T00:00:00Z"),
    );
    store.submit(second.clone());
    assert!(wait_until(Duration::from_secs(10), || store
        .status()
        .failures
        >= 2));
    let status = store.status();
    assert!(status.failing, "{status:?}");
    assert!(
        status.last_error.as_deref().unwrap().contains("full"),
        "{status:?}"
    );
    assert_eq!(raw_row_count(&path), 200);

    pages.store(0, Ordering::Relaxed);
    wait_written(&store, 2200);
    assert!(!store.status().failing);
    let all: Vec<StoreRow> = first.into_iter().chain(second).collect();
    check_usage(&store, &all, "UTC", &[("group_by", "model")]);
    store.close().unwrap();
}

#[test]
fn a_failed_final_write_makes_close_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sluice.db");
    let mut options = sqlite_options(dir.path());
    options.close_timeout = Duration::from_millis(800);
    let store = store::open(options).unwrap();
    let rows = random_rows(&mut Rng(17), 10, 0, 1_000_000);
    fill(&store, &rows);
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    store.submit(random_rows(&mut Rng(19), 5, 0, 1_000_000));
    let started = Instant::now();
    match store.close() {
        Err(StoreError::FinalWrite { rows, reason }) => {
            assert_eq!(rows, 5);
            assert!(reason.contains("locked"), "{reason}");
        }
        other => panic!("expected a failed final write, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    locker.execute_batch("ROLLBACK").unwrap();
    // What was committed before is all there.
    assert_eq!(raw_row_count(&path), 10);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sluice.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    for content in [
        b"{\"version\":1,\"book\":{}} not a database".to_vec(),
        // The right header, then garbage: damaged rather than foreign.
        [b"SQLite format 3\0".as_slice(), &[0xAB; 4096]].concat(),
    ] {
        std::fs::write(&path, &content).unwrap();
        let err = store::open(sqlite_options(dir.path()))
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("sluice.db") && text.contains("left untouched"),
            "{text}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), content);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "nothing created beside it");
    }
}

#[test]
fn an_unwritable_directory_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that cannot be created, whoever runs the test: its parent is a file.
    std::fs::write(dir.path().join("state"), b"a file").unwrap();
    let err = store::open(sqlite_options(dir.path()))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("cannot create directory"), "{text}");

    // A directory without write permission (meaningless for root, who may write anyway).
    use std::os::unix::fs::PermissionsExt;
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(locked.join("probe"), b"").is_err() {
        let options = StoreOptions::new(Target::Sqlite(locked.join("sluice.db")));
        let err = store::open(options).err().expect("refused");
        assert!(err.to_string().contains("sluice.db"), "{err}");
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_full_queue_drops_rows_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sluice.db");
    let mut options = sqlite_options(dir.path());
    options.queue_rows = 50;
    let store = store::open(options).unwrap();
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    for _ in 0..10 {
        store.submit(random_rows(&mut Rng(23), 20, 0, 1_000_000));
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "submit never waits"
    );
    let status = store.status();
    assert_eq!(status.dropped + status.pending, 200, "{status:?}");
    assert!(status.dropped >= 150 - 20, "{status:?}");
    locker.execute_batch("COMMIT").unwrap();
    let kept = 200 - status.dropped;
    wait_written(&store, kept);
    assert_eq!(total_requests(&store), kept);
    store.close().unwrap();
}

/// Rows with long keys hold more memory: the queue is bounded by what its rows hold, not only by
/// their number, and the room comes back once a batch is written.
#[test]
fn the_queue_is_bounded_by_the_memory_its_rows_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sluice.db");
    let mut options = sqlite_options(dir.path());
    options.queue_bytes = 256 << 10;
    let store = store::open(options).unwrap();
    let long = |i: usize, rows: Vec<StoreRow>| -> Vec<StoreRow> {
        rows.into_iter()
            .enumerate()
            .map(|(j, mut row)| {
                // Past the column limit: cut to 256 bytes each when queued.
                row.session = format!("{i}-{j}-{}", "s".repeat(400)).into();
                row.model = format!("{i}-{j}-{}", "m".repeat(400)).into();
                row.credential = format!("{i}-{j}-{}", "c".repeat(400)).into();
                row
            })
            .collect()
    };
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut rng = Rng(31);
    for i in 0..10 {
        store.submit(long(i, random_rows(&mut rng, 100, 0, 1_000_000)));
    }
    let status = store.status();
    assert_eq!(status.dropped + status.pending, 1000, "{status:?}");
    // A row here holds its struct and three 256-byte keys: at least 768 bytes, so at most
    // 256 KiB / 768 B = 341 rows fit, whatever the row count allows (100,000).
    assert!(status.pending <= 341, "{status:?}");
    assert!(status.pending > 100, "{status:?}");
    locker.execute_batch("COMMIT").unwrap();
    let kept = 1000 - status.dropped;
    wait_written(&store, kept);
    assert_eq!(total_requests(&store), kept);
    // Written rows give their room back.
    store.submit(long(10, random_rows(&mut rng, 100, 0, 1_000_000)));
    assert_eq!(
        store.status().dropped,
        status.dropped,
        "room was not given back"
    );
    wait_written(&store, kept + 100);
    store.close().unwrap();
}

#[test]
fn retention_deletes_old_rows_and_rollups_in_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = sqlite_options(dir.path());
    options.retention_days = 30;
    options.retention_interval = Duration::from_millis(100);
    let now_ms = store_now_ms();
    let mut rng = Rng(29);
    let old = random_rows(
        &mut rng,
        5000,
        now_ms - 90 * 86_400_000,
        now_ms - 31 * 86_400_000,
    );
    let recent = random_rows(&mut rng, 300, now_ms - 20 * 86_400_000, now_ms - 60_000);
    let store = store::open(options).unwrap();
    fill(&store, &old);
    fill(&store, &recent);
    let recent_in_sessions = recent.iter().filter(|r| !r.session.is_empty()).count() as u64;
    let recent_with_models = recent.iter().filter(|r| !r.model.is_empty()).count() as u64;
    let recent_with_credentials = recent.iter().filter(|r| !r.credential.is_empty()).count() as u64;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let window = store.window(None, None, 100, 100).unwrap();
            let in_sessions: u64 = window.by_session.iter().map(|s| s.counters.requests).sum();
            // Each rollup table is pruned in its own steps: wait for the marginal one too.
            let in_models: u64 = window.by_model.values().map(|c| c.requests).sum();
            let with_credentials: u64 = window.by_credential.values().map(|c| c.requests).sum();
            store.status().retention_deleted == 5000
                && in_models == recent_with_models
                && with_credentials + window.folded["by_credential"] == recent_with_credentials
                && total_requests(&store) == 300
                && window.totals.requests == 300
                && in_sessions == recent_in_sessions
        }),
        "{:?}",
        store.status()
    );
    check_usage(&store, &recent, "UTC", &[("group_by", "day")]);
    check_window(&store, &recent, None, None);
    assert_eq!(raw_row_count(&dir.path().join("state/sluice.db")), 300);
    store.close().unwrap();
}

fn store_now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

#[test]
fn two_handles_on_one_file_see_each_others_rows() {
    let dir = tempfile::tempdir().unwrap();
    let a = store::open(sqlite_options(dir.path())).unwrap();
    let b = store::open(sqlite_options(dir.path())).unwrap();
    see_each_other(&a, &b);
    a.close().unwrap();
    b.close().unwrap();
}

fn see_each_other(a: &StoreHandle, b: &StoreHandle) {
    let mut rng = Rng(31);
    a.submit(random_rows(
        &mut rng,
        40,
        ms("2026-11-20T00:00:00Z"),
        ms("2026-11-27T00:00:00Z"),
    ));
    assert!(wait_until(Duration::from_secs(2), || total_requests(b) == 40));
    b.submit(random_rows(
        &mut rng,
        60,
        ms("2026-11-20T00:00:00Z"),
        ms("2026-11-27T00:00:00Z"),
    ));
    assert!(wait_until(Duration::from_secs(2), || total_requests(a) == 100));
    assert_eq!(a.window(None, None, 10, 10).unwrap().totals.requests, 100);
}

#[test]
fn a_state_file_is_imported_once_keeping_its_totals() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/stats.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    let minute = ms("2026-11-26T10:07:00Z") / 60_000;
    let c = |requests: u64, input: u64, cost: f64| {
        serde_json::json!({"requests": requests, "errors": 0, "streamed": requests, "incomplete": 0,
            "input_tokens": input, "output_tokens": 2 * input, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "cost_usd": cost})
    };
    let file = serde_json::json!({"version": 1, "book": {
        "counting_since": "2026-11-01T00:00:00Z",
        "lifetime": {
            "totals": c(10, 1000, 1.0),
            "by_model": {"claude-sonnet-4-5": c(7, 700, 0.7), "claude-opus-4-1": c(3, 300, 0.3)},
            "by_caller": {"alice": c(6, 500, 0.5), "bob": c(4, 500, 0.5)},
            "by_status": {"200": 9, "429": 1}
        },
        "minutes": {
            minute.to_string(): {
                "totals": c(4, 400, 0.4),
                "by_model": {"claude-sonnet-4-5": c(3, 300, 0.3), "claude-opus-4-1": c(1, 100, 0.1)},
                "by_caller": {"alice": c(1, 100, 0.1), "bob": c(3, 300, 0.3)},
                "by_status": {"200": 4}
            },
            (minute + 1).to_string(): {
                "totals": c(2, 200, 0.2),
                "by_model": {"claude-sonnet-4-5": c(2, 200, 0.2)},
                "by_caller": {"alice": c(2, 200, 0.2)},
                "by_status": {"200": 1, "429": 1}
            }
        }
    }});
    std::fs::write(&state, serde_json::to_vec(&file).unwrap()).unwrap();
    let options = sqlite_options(dir.path());
    let store = store::open(options.clone()).unwrap();
    let summary = store::import_state_file(&options.target, &state)
        .unwrap()
        .unwrap();
    assert_eq!(summary.requests, 10);
    assert!(!state.exists());
    assert!(summary.renamed_to.ends_with("stats.json.imported"));
    assert!(store::import_state_file(&options.target, &state)
        .unwrap()
        .is_none());

    let report = usage(&store, "group_by=model");
    assert_eq!(report["totals"]["requests"], 10);
    assert_eq!(report["totals"]["input_tokens"], 1000);
    assert_eq!(report["totals"]["output_tokens"], 2000);
    assert!((report["totals"]["cost_usd"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    let by_model: BTreeMap<String, (u64, u64)> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap().to_string(),
                (
                    r["requests"].as_u64().unwrap(),
                    r["input_tokens"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(by_model["claude-sonnet-4-5"], (7, 700));
    assert_eq!(by_model["claude-opus-4-1"], (3, 300));
    // The minute buckets keep their day; the older part lands when counting began.
    let days = usage(&store, "group_by=day,caller");
    let find = |day: &str, caller: &str| {
        days["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["day"] == day && r["caller"] == caller)
            .map(|r| r["requests"].as_u64().unwrap())
    };
    assert_eq!(find("2026-11-26", "alice"), Some(3));
    assert_eq!(find("2026-11-26", "bob"), Some(3));
    assert_eq!(find("2026-11-01", "alice"), Some(3));
    assert_eq!(find("2026-11-01", "bob"), Some(1));
    let window = store
        .window(Some(ms("2026-11-26T00:00:00Z")), None, 10, 10)
        .unwrap();
    assert_eq!(window.by_status["429"], 1);
    assert_eq!(window.totals.requests, 6);

    // A second import of the same content (a rename that failed last time) adds nothing.
    std::fs::rename(&summary.renamed_to, &state).unwrap();
    let again = store::import_state_file(&options.target, &state)
        .unwrap()
        .unwrap();
    assert!(again.already_imported);
    assert_eq!(total_requests(&store), 10);
    store.close().unwrap();
}

/// Counters for comparing: costs to 1e-9, everything else exactly.
fn assert_same(what: &str, got: &store::Counters, want: &store::Counters) {
    let (mut got, mut want) = (*got, *want);
    assert!(
        (got.cost_usd - want.cost_usd).abs() < 1e-9,
        "{what}: {got:?} != {want:?}"
    );
    got.cost_usd = 0.0;
    want.cost_usd = 0.0;
    assert_eq!(got, want, "{what}");
}

#[test]
fn a_state_file_import_keeps_every_group_exactly_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    state_file_import_keeps_every_group_exactly(sqlite_options(dir.path()));
}

#[test]
#[ignore = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)"]
fn a_state_file_import_keeps_every_group_exactly_on_postgres() {
    state_file_import_keeps_every_group_exactly(pg_options(&pg_database()));
}

fn state_file_import_keeps_every_group_exactly(options: StoreOptions) {
    // The groups an earlier sluice kept, made here from known requests: per minute for the
    // last three days, and lifetime (some requests older than any minute kept).
    const GROUPS: [&str; 8] = [
        "by_route",
        "by_model",
        "by_source",
        "by_credential",
        "by_caller",
        "by_project",
        "by_session",
        "by_agent",
    ];
    let choices: [&[&str]; 8] = [
        &["/anthropic", "/other"],
        &["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"],
        &["client_oauth", "client_api_key", "server_key"],
        &[
            "client_oauth:aaaaaaaaaaaa",
            "client_api_key:bbbbbbbbbbbb",
            "server_key:cccccccccccc",
            "",
        ],
        &["alice", "bob", "carol", ""],
        &["sluice", "web", ""],
        &["s-1", "s-2", "s-3", "s-4", ""],
        &["agent-1", "agent-2", ""],
    ];
    let mut rng = Rng(1234);
    let first_minute = ms("2026-11-24T09:00:00Z") / 60_000;
    type Request = (Option<i64>, [String; 8], u16, store::Counters);
    let requests: Vec<Request> = (0..500)
        .map(|i| {
            let minute = (i % 7 != 0).then(|| first_minute + rng.below(3 * 24 * 60) as i64);
            let keys = choices.map(|c| rng.pick(c).to_string());
            let status = [200, 200, 200, 429, 500][rng.below(5) as usize];
            let input = rng.below(20_000);
            let output = rng.below(4_000);
            let counters = store::Counters {
                requests: 1,
                errors: u64::from(status >= 400),
                streamed: rng.below(2),
                incomplete: u64::from(rng.below(10) == 0),
                input_tokens: input,
                output_tokens: output,
                cache_creation_input_tokens: rng.below(3) * 1000,
                cache_read_input_tokens: rng.below(50_000),
                web_search_requests: rng.below(3),
                reasoning_output_tokens: rng.below(300),
                usage_missing: u64::from(rng.below(9) == 0),
                // Per caller, tokens and cost are not proportional to anything else.
                cost_usd: (input * 3 + output * 15) as f64 / 1e6 * (1 + rng.below(4)) as f64,
            };
            (minute, keys, status, counters)
        })
        .collect();
    let groups_of = |of: &[&Request]| {
        let mut totals = store::Counters::default();
        let mut groups: BTreeMap<&str, BTreeMap<String, store::Counters>> = BTreeMap::new();
        let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
        for (_, keys, status, counters) in of {
            totals.merge(counters);
            for (group, key) in GROUPS.iter().zip(keys) {
                let entry = groups.entry(group).or_default();
                if !key.is_empty() {
                    entry.entry(key.clone()).or_default().merge(counters);
                }
            }
            *statuses.entry(status.to_string()).or_default() += 1;
        }
        let mut json = serde_json::json!({"totals": totals, "by_status": statuses});
        for (group, map) in groups {
            json[group] = serde_json::to_value(map).unwrap();
        }
        (json, totals)
    };
    let all: Vec<&Request> = requests.iter().collect();
    let (lifetime, totals) = groups_of(&all);
    let mut minutes: BTreeMap<i64, Vec<&Request>> = BTreeMap::new();
    for request in &requests {
        if let Some(minute) = request.0 {
            minutes.entry(minute).or_default().push(request);
        }
    }
    let minutes: serde_json::Map<String, Value> = minutes
        .iter()
        .map(|(minute, of)| (minute.to_string(), groups_of(of).0))
        .collect();
    let limited = "client_oauth:aaaaaaaaaaaa";
    let file = serde_json::json!({"version": 1, "book": {
        "counting_since": "2026-11-01T00:00:00Z",
        "lifetime": lifetime,
        "minutes": minutes,
        "rate_limits": {limited: {"seen_at": "2026-11-27T08:00:00Z",
            "headers": {"anthropic-ratelimit-unified-status": "allowed"}, "status": "allowed"}},
        "session_seen": {"s-1": 4, "s-2": 3, "s-3": 2, "s-4": 1},
    }});
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("stats.json");
    std::fs::write(&state, serde_json::to_vec(&file).unwrap()).unwrap();
    let store = store::open(options.clone()).unwrap();
    let summary = store::import_state_file(&options.target, &state)
        .unwrap()
        .unwrap();
    assert_eq!(summary.requests, requests.len() as u64);

    // What each key of each group adds up to, from the requests themselves.
    let expected = |group: usize| {
        let mut sums: BTreeMap<String, store::Counters> = BTreeMap::new();
        for (_, keys, _, counters) in &requests {
            if !keys[group].is_empty() {
                sums.entry(keys[group].clone()).or_default().merge(counters);
            }
        }
        sums
    };
    let report = |query: &str| {
        let q = UsageQuery::parse(query).unwrap();
        store.usage(&q, now()).unwrap()
    };
    assert_same("totals", &report("").totals, &totals);
    for (group, name) in [
        "route",
        "model",
        "source",
        "credential",
        "caller",
        "project",
    ]
    .into_iter()
    .enumerate()
    {
        let got: BTreeMap<String, store::Counters> = report(&format!("group_by={name}"))
            .rows
            .into_iter()
            .filter_map(|row| match &row.keys[0] {
                store::KeyValue::Text(key) if !key.is_empty() => Some((key.clone(), row.counters)),
                _ => None,
            })
            .collect();
        let want = expected(group);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (key, counters) in &want {
            assert_same(&format!("{name} {key}"), &got[key], counters);
        }
    }
    let statuses: BTreeMap<i64, u64> = report("group_by=status")
        .rows
        .iter()
        .filter_map(|row| match row.keys[0] {
            store::KeyValue::Status(status) if row.counters.requests > 0 => {
                Some((status, row.counters.requests))
            }
            _ => None,
        })
        .collect();
    let mut want_statuses: BTreeMap<i64, u64> = BTreeMap::new();
    for (_, _, status, _) in &requests {
        *want_statuses.entry(i64::from(*status)).or_default() += 1;
    }
    assert_eq!(statuses, want_statuses);

    // `/stats` groups, including sessions, agents and projects, which `/usage` reads raw.
    let window = store.window(None, None, 1000, 1000).unwrap();
    assert_same("window totals", &window.totals, &totals);
    for (group, got) in [
        (0, &window.by_route),
        (1, &window.by_model),
        (2, &window.by_source),
        (3, &window.by_credential),
        (4, &window.by_caller),
        (5, &window.by_project),
        (7, &window.by_agent),
    ] {
        let want = expected(group);
        assert_eq!(got.len(), want.len(), "{}", GROUPS[group]);
        for (key, counters) in &want {
            assert_same(&format!("{} {key}", GROUPS[group]), &got[key], counters);
        }
    }
    let sessions = expected(6);
    assert_eq!(window.by_session.len(), sessions.len());
    for session in &window.by_session {
        assert_same(
            &session.session,
            &session.counters,
            &sessions[&session.session],
        );
    }
    assert_eq!(
        window.folded.values().sum::<u64>(),
        0,
        "{:?}",
        window.folded
    );
    let loaded = store::load_rate_limits(&options.target).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].0, limited);
    assert_eq!(loaded[0].1 .0, ms("2026-11-27T08:00:00Z"));
    store.close().unwrap();
}

#[test]
fn an_unreadable_state_file_is_reported_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("stats.json");
    std::fs::write(&state, b"{not json").unwrap();
    let options = sqlite_options(dir.path());
    let err = store::import_state_file(&options.target, &state).unwrap_err();
    assert!(err.to_string().contains("stats.json"), "{err}");
    assert_eq!(std::fs::read(&state).unwrap(), b"{not json");
}

// ---------------------------------------------------------------------------------------------
// Quotas fed from the store

/// A ledger with one quota, `max_requests` and `max_usd` a day for each caller.
fn daily_ledger() -> Arc<Ledger> {
    let quota: QuotaFile = serde_json::from_value(serde_json::json!({
        "name": "daily", "caller": "*", "window": "day", "max_requests": 1000, "max_usd": 1000.0,
    }))
    .unwrap();
    Arc::new(Ledger::new(
        sluice::quotas::validate(&[quota], &[]).unwrap(),
    ))
}

/// What the ledger counts for `caller` today: (requests, tokens, dollars).
fn used_by(ledger: &Ledger, caller: &str) -> (u64, u64, f64) {
    let report = ledger.report(Timestamp::now(), 100);
    report[0]
        .subjects
        .iter()
        .find(|s| s.subject == caller)
        .map_or((0, 0, 0.0), |s| {
            (s.used.requests, s.used.tokens, s.used.usd)
        })
}

/// Rows of `caller` finished just now (so they fall in today's window whatever the hour).
fn spend_rows(caller: &str, n: usize, instance: &str) -> Vec<StoreRow> {
    let now = store_now_ms();
    (0..n)
        .map(|i| StoreRow {
            finished_ms: now - 1000 + i as i64,
            instance: instance.into(),
            route: "/anthropic".into(),
            caller: caller.into(),
            model: "claude-sonnet-4-5".into(),
            input_tokens: 10,
            output_tokens: 5,
            cache_write_1h_tokens: 2,
            cache_read_tokens: 3,
            cost_usd: 0.25,
            ..StoreRow::default()
        })
        .collect()
}

#[test]
fn spend_in_the_store_is_charged_to_quotas_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(sqlite_options(dir.path())).unwrap();
    let mut rows = spend_rows("alice", 7, "earlier");
    rows.extend(spend_rows("bob", 2, "earlier"));
    // Far outside every quota window: never read.
    rows.push(StoreRow {
        finished_ms: store_now_ms() - 90 * 86_400_000,
        caller: "alice".into(),
        cost_usd: 100.0,
        ..StoreRow::default()
    });
    fill(&store, &rows);
    let ledger = daily_ledger();
    let (charged, last_id) = store::replay(&store, &ledger, SystemTime::now()).unwrap();
    assert_eq!(charged, 9);
    assert!(last_id >= 9);
    let (requests, tokens, usd) = used_by(&ledger, "alice");
    assert_eq!((requests, tokens), (7, 7 * (10 + 5 + 2 + 3)));
    assert!((usd - 7.0 * 0.25).abs() < 1e-9, "{usd}");
    assert_eq!(used_by(&ledger, "bob").0, 2);
    store.close().unwrap();
}

/// Instance `b` charges what `a` writes within 2 s, and never its own rows.
fn fleet_shares_spend(a: &StoreHandle, b: &StoreHandle) {
    let ledger_b = daily_ledger();
    let start = b.max_id().unwrap();
    let poller =
        store::poll_other_instances(b.clone(), ledger_b.clone(), "b".into(), start).unwrap();
    fill(b, &spend_rows("alice", 3, "b"));
    let written = Instant::now();
    fill(a, &spend_rows("alice", 5, "a"));
    assert!(
        wait_until(Duration::from_secs(2), || used_by(&ledger_b, "alice").0
            == 5),
        "b counts {:?} of a's 5 requests after {:?}",
        used_by(&ledger_b, "alice"),
        written.elapsed()
    );
    eprintln!(
        "other instance's spend counted after {:?}",
        written.elapsed()
    );
    // Read again and again, each row is charged once.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(used_by(&ledger_b, "alice").0, 5);
    b.close().unwrap();
    poller.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Rate-limit states kept across restarts

/// Two sluices' logs on one store: the newest state per credential is kept (an older one
/// arriving late never replaces it), at most the newest `MAX_RATE_LIMITS` credentials, and the
/// next start reads them back oldest first.
fn rate_limit_states_are_kept_bounded(options: StoreOptions) {
    let store = store::open(options.clone()).unwrap();
    let a = store::RateLimitLog::start(&options.target).unwrap();
    let b = store::RateLimitLog::start(&options.target).unwrap();
    let extra = 25;
    let n = store::MAX_RATE_LIMITS + extra;
    for i in 0..n {
        a.set(
            &format!("client_oauth:{i:012}"),
            1_000 + i as i64,
            format!("{{\"v\":{i}}}"),
        );
    }
    a.close();
    // A later state for one credential, then an older one from the other sluice.
    let last = format!("client_oauth:{:012}", n - 1);
    b.set(&last, 5_000_000, "{\"v\":\"newest\"}".into());
    b.close();
    let c = store::RateLimitLog::start(&options.target).unwrap();
    c.set(&last, 2, "{\"v\":\"stale\"}".into());
    c.close();
    let loaded = store::load_rate_limits(&options.target).unwrap();
    assert_eq!(loaded.len(), store::MAX_RATE_LIMITS);
    // The oldest `extra` credentials were let go; the rest come oldest first.
    assert_eq!(loaded[0].0, format!("client_oauth:{extra:012}"));
    assert_eq!(
        loaded[0].1,
        (1_000 + extra as i64, format!("{{\"v\":{extra}}}"))
    );
    let newest = loaded.last().unwrap();
    assert_eq!(newest.0, last);
    assert_eq!(newest.1, (5_000_000, "{\"v\":\"newest\"}".to_string()));
    assert!(loaded.windows(2).all(|w| w[0].1 .0 <= w[1].1 .0));
    store.close().unwrap();
}

#[test]
fn rate_limit_states_are_kept_bounded_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    rate_limit_states_are_kept_bounded(sqlite_options(dir.path()));
}

#[test]
#[ignore = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)"]
fn rate_limit_states_are_kept_bounded_on_postgres() {
    rate_limit_states_are_kept_bounded(pg_options(&pg_database()));
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const PG_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-test-server.sh");

fn pg_script(args: &[&str]) -> String {
    let out = std::process::Command::new(PG_SCRIPT)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{PG_SCRIPT} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A throwaway server, stopped and removed when dropped.
struct PgServer {
    url: String,
}

impl PgServer {
    fn start() -> PgServer {
        PgServer {
            url: pg_script(&["start"]),
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        pg_script(&["stop", &self.url]);
    }
}

fn pg_options(url: &str) -> StoreOptions {
    let mut options = StoreOptions::new(Target::Postgres(url.into()));
    options.commit_interval = Duration::from_millis(50);
    options.close_timeout = Duration::from_secs(3);
    options
}

#[test]
#[ignore = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)"]
fn usage_matches_independent_sums_on_postgres() {
    let url = pg_database();
    let store = store::open(pg_options(&url)).unwrap();
    let rows = dst_rows();
    fill(&store, &rows);
    check_usage_suite(&store, &rows);
    check_window_suite(&store, &rows);
    store.close().unwrap();
    // Migrations run again at the next start without harm.
    let store = store::open(pg_options(&url)).unwrap();
    assert_eq!(total_requests(&store), rows.len() as u64);
    store.close().unwrap();
}

#[test]
#[ignore = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)"]
fn two_sluices_on_one_postgres_see_each_others_rows() {
    let url = pg_database();
    let a = store::open(pg_options(&url)).unwrap();
    let b = store::open(pg_options(&url)).unwrap();
    see_each_other(&a, &b);
    a.close().unwrap();
    b.close().unwrap();
}

#[test]
#[ignore = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)"]
fn two_sluices_on_one_postgres_share_quota_spend_within_two_seconds() {
    let url = pg_database();
    let a = store::open(pg_options(&url)).unwrap();
    let b = store::open(pg_options(&url)).unwrap();
    fleet_shares_spend(&a, &b);
    a.close().unwrap();
}

#[test]
#[ignore = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)"]
fn a_postgres_restart_mid_run_loses_nothing_committed() {
    std::env::var("SLUICE_TEST_PG_URL").expect(PG_IGNORED);
    // A server of its own, so that restarting it does not disturb the other tests.
    let server = PgServer::start();
    let url = server.url.clone();
    let store = store::open(pg_options(&url)).unwrap();
    let mut rng = Rng(37);
    let mut all = random_rows(
        &mut rng,
        300,
        ms("2026-11-20T00:00:00Z"),
        ms("2026-11-27T00:00:00Z"),
    );
    fill(&store, &all);

    let restart = std::thread::spawn({
        let url = url.clone();
        move || {
            pg_script(&["restart", &url]);
        }
    });
    // Rows keep coming while the server goes down and comes back.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let rows = random_rows(
            &mut rng,
            20,
            ms("2026-11-20T00:00:00Z"),
            ms("2026-11-27T00:00:00Z"),
        );
        all.extend(rows.iter().cloned());
        store.submit(rows);
        std::thread::sleep(Duration::from_millis(50));
    }
    restart.join().unwrap();
    wait_written(&store, all.len() as u64);
    let status = store.status();
    assert!(status.failures >= 1, "the restart was noticed: {status:?}");
    assert!(!status.failing && status.pending == 0, "{status:?}");
    check_usage(&store, &all, "Europe/Berlin", &[("group_by", "day,model")]);
    store.close().unwrap();
}

/// The TLS side of a server `pg-test-server.sh` started: its port (the socket's) and the
/// directory holding `tls/ca.crt`, both read from the URL it printed.
fn pg_tls_side(url: &str) -> (String, std::path::PathBuf) {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {url}"))
            .to_string()
    };
    (param("port"), std::path::PathBuf::from(param("host")))
}

/// Whether the connection named `application_name` is encrypted, as the server sees it.
fn pg_connection_encrypted(socket_url: &str, application_name: &str) -> bool {
    let mut admin = postgres::Client::connect(socket_url, postgres::NoTls).unwrap();
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&application_name],
        )
        .unwrap();
    assert!(!rows.is_empty(), "no connection named {application_name}");
    rows.iter().all(|r| r.get::<_, bool>(0))
}

#[test]
#[ignore = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)"]
fn postgres_over_tls_honours_sslmode_and_the_trusted_ca() {
    std::env::var("SLUICE_TEST_PG_URL").expect(PG_IGNORED);
    // A server of its own: TLS is switched off on it at the end.
    let server = PgServer::start();
    let (port, dir) = pg_tls_side(&server.url);
    let ca = dir.join("tls/ca.crt");
    let scratch = tempfile::tempdir().unwrap();
    let wrong_ca = scratch.path().join("other-ca.crt");
    let other = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap()
    };
    std::fs::write(&wrong_ca, other.pem()).unwrap();
    let mut case = 0;
    let mut url = |host: &str, tls: &str| {
        case += 1;
        let name = format!("tls_case_{case}");
        let url = format!(
            "postgresql://postgres:hunter2@{host}:{port}/postgres?application_name={name}{tls}"
        );
        (url, name)
    };
    let connects = |(url, name): (String, String)| -> bool {
        let store = store::open(pg_options(&url)).unwrap_or_else(|e| panic!("{url}: {e}"));
        let encrypted = pg_connection_encrypted(&server.url, &name);
        store.close().unwrap();
        encrypted
    };
    let refused = |(url, _): (String, String)| -> String {
        let err = store::open(pg_options(&url))
            .err()
            .unwrap_or_else(|| panic!("{url} was accepted"))
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        err
    };
    let ca_arg = |path: &Path| format!("&sslrootcert={}", path.display());

    // The certificate names `localhost`: verify-full accepts it there with the test CA.
    assert!(connects(url(
        "localhost",
        &format!("&sslmode=verify-full{}", ca_arg(&ca))
    )));
    // At 127.0.0.1 the name does not match: verify-full refuses, verify-ca accepts.
    let err = refused(url(
        "127.0.0.1",
        &format!("&sslmode=verify-full{}", ca_arg(&ca)),
    ));
    assert!(err.contains("certificate"), "{err}");
    assert!(connects(url(
        "127.0.0.1",
        &format!("&sslmode=verify-ca{}", ca_arg(&ca))
    )));
    // Another CA: refused, by require too once a CA is named (as libpq does).
    for mode in ["verify-full", "verify-ca", "require"] {
        let err = refused(url(
            "localhost",
            &format!("&sslmode={mode}{}", ca_arg(&wrong_ca)),
        ));
        assert!(err.contains("certificate"), "{mode}: {err}");
    }
    // The built-in roots do not know the test CA.
    let err = refused(url("localhost", "&sslmode=verify-full"));
    assert!(err.contains("certificate"), "{err}");
    // require and prefer (the default) encrypt without checking; disable does not encrypt.
    assert!(connects(url("127.0.0.1", "&sslmode=require")));
    assert!(connects(url("127.0.0.1", "")));
    assert!(!connects(url("127.0.0.1", "&sslmode=disable")));

    // A server without TLS: prefer goes on in the clear, require and verify-* refuse.
    let mut admin = postgres::Client::connect(&server.url, postgres::NoTls).unwrap();
    admin.batch_execute("ALTER SYSTEM SET ssl = off").unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        match store::open(pg_options(&url("127.0.0.1", "&sslmode=require").0)) {
            Err(err) => break err.to_string(),
            Ok(store) => {
                store.close().unwrap();
                assert!(Instant::now() < deadline, "TLS stayed on");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert!(err.contains("does not support TLS"), "{err}");
    assert!(!connects(url("127.0.0.1", "&sslmode=prefer")));
    let err = refused(url(
        "localhost",
        &format!("&sslmode=verify-full{}", ca_arg(&ca)),
    ));
    assert!(err.contains("does not support TLS"), "{err}");
}

#[test]
fn an_unreachable_postgres_is_refused_with_the_reason_and_no_password() {
    let err = store::open(pg_options(
        "postgresql://sluice:hunter2@127.0.0.1:1/nothing",
    ))
    .err()
    .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:1") && !text.contains("hunter2"),
        "{text}"
    );
}

#[test]
fn sluice_report_reads_the_store_file_directly() {
    let dir = tempfile::tempdir().unwrap();
    let options = sqlite_options(dir.path());
    let store = store::open(options.clone()).unwrap();
    let rows = dst_rows();
    fill(&store, &rows);
    store.close().unwrap();
    drop(store);
    let Target::Sqlite(path) = &options.target else {
        unreachable!()
    };
    let q = UsageQuery::parse("group_by=day,model&tz=Europe/Berlin").unwrap();
    let direct = store::usage_from_file(path, &q, now()).unwrap().to_json();
    assert_eq!(direct["totals"]["requests"], rows.len() as u64);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["report", "daily", "--json", "--since", "2026-01-01", "--db"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["totals"], direct["totals"]);

    let missing = store::usage_from_file(&dir.path().join("nope.db"), &q, now()).unwrap_err();
    assert!(missing.to_string().contains("nope.db"), "{missing}");
    assert!(!dir.path().join("nope.db").exists());
}

#[test]
fn usage_by_keys_reads_no_more_groups_from_the_store_than_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(sqlite_options(dir.path())).unwrap();
    check_usage_reads_at_most_its_limit(&store);
}

#[test]
#[ignore = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)"]
fn usage_by_keys_reads_no_more_groups_than_its_limit_on_postgres() {
    let store = store::open(pg_options(&pg_database())).unwrap();
    check_usage_reads_at_most_its_limit(&store);
    store.close().unwrap();
}

/// 3,000 sessions over three days, 25 asked for: the store hands over a few times 26 groups
/// (one query per piece of the window), the first 25 in key order, with every group's totals.
fn check_usage_reads_at_most_its_limit(store: &StoreHandle) {
    let mut rng = Rng(8);
    let now_ms = Timestamp::now().as_millisecond();
    let n = 3_000;
    let mut rows = random_rows(&mut rng, n, now_ms - 3 * 86_400_000, now_ms - 60_000);
    for (i, row) in rows.iter_mut().enumerate() {
        row.session = format!("s-{i:05}").into();
    }
    fill(store, &rows);
    let q = UsageQuery::parse("group_by=session&limit=25").unwrap();
    let capped = store.usage(&q, now()).unwrap();
    assert_eq!(capped.rows.len(), 25);
    assert!(capped.truncated);
    assert!(
        capped.rows_read <= 10 * 26,
        "{} groups read from the store to answer 25",
        capped.rows_read
    );
    let whole = store
        .usage(&UsageQuery::parse("group_by=session").unwrap(), now())
        .unwrap();
    assert_eq!(whole.rows.len(), n);
    assert!(!whole.truncated);
    assert_eq!(
        capped.rows[..],
        whole.rows[..25],
        "the first rows in key order"
    );
    assert_eq!(capped.totals, whole.totals, "the totals count every group");
    assert_eq!(capped.totals.requests, n as u64);
}

#[test]
fn usage_with_more_groups_than_its_limit_is_capped_and_says_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(sqlite_options(dir.path())).unwrap();
    let mut rng = Rng(26);
    let now_ms = Timestamp::now().as_millisecond();
    let mut rows = random_rows(&mut rng, 40, now_ms - 3_600_000, now_ms - 60_000);
    for (i, row) in rows.iter_mut().enumerate() {
        row.session = format!("s-{i:03}").into();
    }
    fill(&store, &rows);
    let capped = usage(&store, "group_by=session&limit=25");
    assert_eq!(capped["rows"].as_array().unwrap().len(), 25);
    assert_eq!(capped["truncated"], true);
    assert_eq!(
        capped["totals"]["requests"], 40,
        "the totals count every row"
    );
    let whole = usage(&store, "group_by=session");
    assert_eq!(whole["rows"].as_array().unwrap().len(), 40);
    assert_eq!(whole["truncated"], false);

    let q = UsageQuery::parse("group_by=session&limit=25&format=csv").unwrap();
    let (_, csv) = store.usage(&q, now()).unwrap().render(q.format);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 25 + 1, "{csv}");
    assert!(
        lines[26].starts_with("# truncated: the first 25 rows"),
        "{csv}"
    );
    // Without a limit the default applies, and no query may ask for more than the maximum.
    assert_eq!(
        UsageQuery::parse("").unwrap().limit,
        store::DEFAULT_USAGE_ROWS
    );
    assert!(UsageQuery::parse(&format!("limit={}", store::MAX_USAGE_ROWS + 1)).is_err());
    store.close().unwrap();
}

#[test]
fn a_store_file_deleted_while_running_is_reported_and_opened_anew() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sluice.db");
    let store = store::open(sqlite_options(dir.path())).unwrap();
    let mut rng = Rng(11_26);
    let now_ms = Timestamp::now().as_millisecond();
    fill(&store, &random_rows(&mut rng, 20, now_ms - 60_000, now_ms));
    assert_eq!(store.status().file_reopened, 0);

    std::fs::remove_file(&path).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || store.status().file_reopened
            >= 1),
        "the deleted file was not noticed: {:?}",
        store.status()
    );
    let status = store.status();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("deleted or replaced")),
        "{status:?}"
    );
    // Later rows land in the new file at the path, and /usage reads it.
    fill(&store, &random_rows(&mut rng, 7, now_ms - 60_000, now_ms));
    assert_eq!(raw_row_count(&path), 7);
    assert_eq!(total_requests(&store), 7);
    store.close().unwrap();
}
