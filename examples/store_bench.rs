//! Fills a store with a million requests spread over the last 30 days, then times the writer
//! (rows/s), the store's size per million rows, and the queries behind `/usage` and `/stats`.
//!
//! Then adds a burst of hostile requests (each a new model, credential and session) and times
//! `/stats`' store part over it.
//!
//! With `--instances K`, instead: K stores open on the same database at once, as K sluices
//! would be, each fed `--rate` rows/s of team traffic (default 30,000, about what one sluice
//! answers in `bench/run.sh`) for `--seconds` (default 20) by a load generator thread of its
//! own; prints the rows written and dropped and the backlog left when the load stopped. An
//! instance is served when none of its rows were dropped and its backlog is under a second of
//! rows (`bench/store.sh --fleet` raises K until that fails).
//!
//! Run: `cargo run --release --example store_bench -- [--rows 1000000] [--hostile 100000]
//! [--runs 5] [--db PATH] [--pg URL]` (SQLite in a temporary directory unless `--db` or `--pg`
//! is given). Prints one line per measurement, then all of them as a markdown table
//! (`bench/store.sh` runs it).

use std::time::{Duration, Instant, SystemTime};

use sluice::store::{self, StoreOptions, StoreRow, Target, UsageQuery};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const MODELS: [&str; 6] = [
    "claude-sonnet-4-5",
    "claude-sonnet-4-5",
    "claude-sonnet-4-5",
    "claude-opus-4-1",
    "claude-haiku-4-5",
    "claude-opus-4-5",
];

/// Team-like traffic: 20 callers, each with one credential and two projects; sessions of about
/// 200 requests; some subagents; mostly 200s.
fn row(rng: &mut Rng, finished_ms: i64, session: u64) -> StoreRow {
    let caller = rng.below(20);
    let status = match rng.below(100) {
        0..=94 => 200,
        95..=97 => 429,
        98 => 500,
        _ => 400,
    };
    StoreRow {
        finished_ms,
        instance: "bench".into(),
        route: "/anthropic".into(),
        method: "POST".into(),
        status,
        outcome: if rng.below(50) == 0 {
            "client_gone"
        } else {
            "completed"
        }
        .into(),
        streamed: true,
        model: MODELS[rng.below(MODELS.len() as u64) as usize].into(),
        source: if caller < 15 {
            "client_oauth"
        } else {
            "client_api_key"
        }
        .into(),
        credential: format!("client_oauth:{caller:012x}").into(),
        caller: format!("caller-{caller}").into(),
        session: format!("{session:08x}-7959-40b6-be6e-3b4a31afd82c").into(),
        agent: if rng.below(4) == 0 {
            format!("agent-{}", rng.below(1000)).into()
        } else {
            String::new().into()
        },
        parent_agent: String::new().into(),
        project: format!("project-{}", caller * 2 + rng.below(2)).into(),
        provider: "anthropic".into(),
        client: "claude-code".into(),
        input_tokens: rng.below(20_000),
        output_tokens: rng.below(4_000),
        cache_write_5m_tokens: rng.below(2_000),
        cache_write_1h_tokens: 0,
        cache_read_tokens: rng.below(100_000),
        web_search_requests: u64::from(rng.below(100) == 0),
        reasoning_output_tokens: 0,
        usage_missing: false,
        cost_usd: rng.below(100_000) as f64 / 1e6,
        ttfb_ms: Some(300 + rng.below(2_000)),
        total_ms: 1_000 + rng.below(60_000),
        overhead_ms: Some(rng.below(3)),
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The median of `runs` runs of `run`, and its last result.
fn time<T>(runs: usize, mut run: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(run());
        times.push(started.elapsed());
    }
    times.sort();
    (times[runs / 2], last.expect("at least one run"))
}

/// One hostile request: a model, credential and session never seen before (as a client sending
/// new values each time would make them).
fn hostile_row(i: u64, finished_ms: i64) -> StoreRow {
    StoreRow {
        finished_ms,
        instance: "bench".into(),
        route: "/anthropic".into(),
        method: "POST".into(),
        status: 404,
        outcome: "completed".into(),
        model: format!("hostile-model-{i}").into(),
        source: "client_api_key".into(),
        credential: format!("client_api_key:{i:012x}").into(),
        session: format!("session-{i}").into(),
        total_ms: 1,
        ..StoreRow::default()
    }
}

/// Writes `rows` through the store's writer, `make(i)` each, without overflowing its queue;
/// returns the seconds it took until all were committed.
fn fill(store: &store::StoreHandle, rows: u64, mut make: impl FnMut(u64) -> StoreRow) -> f64 {
    let started = Instant::now();
    let chunk = 2_000u64;
    let mut made = 0u64;
    let before = store.status().rows_written;
    while made < rows {
        let n = chunk.min(rows - made);
        let batch: Vec<StoreRow> = (made..made + n).map(&mut make).collect();
        // Stay well under the queue's bounds (rows and bytes: 12 MiB are ~20,000 team rows): a
        // benchmark must not drop rows.
        while store.status().pending > 10_000 {
            std::thread::sleep(Duration::from_millis(2));
        }
        store.submit(batch);
        made += n;
    }
    while store.status().rows_written < before + rows {
        let status = store.status();
        assert_eq!(status.dropped, 0, "the store dropped rows: {status:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed().as_secs_f64()
}

/// Rows of the markdown table printed at the end.
struct Table(Vec<(String, String)>);

impl Table {
    fn add(&mut self, measure: impl Into<String>, value: impl Into<String>) {
        let (measure, value) = (measure.into(), value.into());
        println!("{measure}: {value}");
        self.0.push((measure, value));
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// K stores on `target`, each fed `rate` rows/s for `seconds` by a thread of its own. Prints one
/// line: `fleet K rate R: written W dropped D backlog B served yes|no`.
fn fleet(target: &Target, instances: usize, rate: u64, seconds: u64) {
    let stores: Vec<store::StoreHandle> = (0..instances)
        .map(|_| store::open(StoreOptions::new(target.clone())).expect("open store"))
        .collect();
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let started = Instant::now();
    let backlogs: Vec<u64> = std::thread::scope(|scope| {
        let generators: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, store)| {
                scope.spawn(move || {
                    let mut rng = Rng(0x5eed + n as u64);
                    let mut next = Instant::now();
                    let mut made = 0u64;
                    while started.elapsed() < Duration::from_secs(seconds) {
                        let now_ms = store_now_ms();
                        let batch: Vec<StoreRow> = (0..per_tick)
                            .map(|i| {
                                let mut row = row(&mut rng, now_ms, (made + i) / 200);
                                row.instance = format!("bench-{n}").into();
                                row
                            })
                            .collect();
                        made += per_tick;
                        store.submit(batch);
                        next += tick;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    store.status().pending
                })
            })
            .collect();
        generators
            .into_iter()
            .map(|g| g.join().expect("generator"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (mut written, mut dropped) = (0, 0);
    for store in &stores {
        store.close().expect("close");
        let status = store.status();
        written += status.rows_written;
        dropped += status.dropped;
    }
    let backlog = backlogs.iter().copied().max().unwrap_or(0);
    let served = dropped == 0 && backlog < rate;
    println!(
        "fleet {instances} rate {rate}: written {written} dropped {dropped} backlog {backlog} \
         written_per_s {:.0} served {}",
        written as f64 / elapsed,
        if served { "yes" } else { "no" }
    );
}

fn main() {
    if let Some(instances) = arg("--instances") {
        let instances: usize = instances.parse().expect("--instances K");
        let rate: u64 = arg("--rate").map_or(30_000, |r| r.parse().expect("--rate N"));
        let seconds: u64 = arg("--seconds").map_or(20, |r| r.parse().expect("--seconds N"));
        let temp = tempfile::tempdir().expect("temp dir");
        let target = match arg("--pg") {
            Some(url) => Target::Postgres(url),
            None => {
                Target::Sqlite(arg("--db").map_or_else(|| temp.path().join("fleet.db"), Into::into))
            }
        };
        fleet(&target, instances, rate, seconds);
        return;
    }
    let rows: u64 = arg("--rows").map_or(1_000_000, |r| r.parse().expect("--rows N"));
    let hostile: u64 = arg("--hostile").map_or(100_000, |r| r.parse().expect("--hostile N"));
    let runs: usize = arg("--runs").map_or(5, |r| r.parse().expect("--runs N"));
    let temp = tempfile::tempdir().expect("temp dir");
    let sqlite_path = arg("--db").map_or_else(|| temp.path().join("sluice.db"), Into::into);
    let target = match arg("--pg") {
        Some(url) => Target::Postgres(url),
        None => Target::Sqlite(sqlite_path.clone()),
    };
    let mut table = Table(Vec::new());
    let options = StoreOptions::new(target.clone());
    let store = store::open(options.clone()).expect("open store");

    let now_ms = store_now_ms();
    let span_ms = 30 * 86_400_000 - 3_600_000;
    let mut rng = Rng(0x5eed);
    let seconds = fill(&store, rows, |i| {
        let at = now_ms - span_ms + (span_ms as u64 * i / rows) as i64;
        row(&mut rng, at, i / 200)
    });
    let status = store.status();
    assert_eq!((status.dropped, status.failures), (0, 0), "{status:?}");
    table.add(
        format!("writer, {rows} team rows (rows/s)"),
        format!("{:.0}", rows as f64 / seconds),
    );
    store.close().expect("close");
    drop(store);

    if let (Target::Sqlite(path), true) = (&target, rows > 0) {
        let conn = rusqlite::Connection::open(path).expect("open for size");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        let bytes = std::fs::metadata(path).expect("size").len();
        table.add(
            "store size per million rows",
            format!("{:.0} MB", bytes as f64 / 1e6 * 1e6 / rows as f64),
        );
    }

    let store = store::open(options).expect("reopen store");
    let now = SystemTime::now();
    for query in [
        "group_by=day,model",
        "group_by=day,model&tz=Europe/Berlin",
        "group_by=day,model&since=30d",
        "group_by=hour,caller&since=7d&tz=Asia/Kolkata",
        "group_by=block",
        "group_by=day,caller&model=claude-sonnet&tz=Europe/Berlin",
        "group_by=month,project&model=claude-opus",
        "group_by=session&since=1d",
        "group_by=agent&since=1d",
    ] {
        let q = UsageQuery::parse(query).expect("query");
        let (took, report) = time(runs, || store.usage(&q, now).expect("usage"));
        table.add(format!("`/usage?{query}`"), ms(took));
        assert_eq!(
            report.totals.requests,
            report.rows.iter().map(|r| r.counters.requests).sum::<u64>()
        );
        if query == "group_by=day,model" {
            assert_eq!(report.totals.requests, rows);
        }
    }
    let since_30d = Some(now_ms - 30 * 86_400_000 + 123);
    let (took, window) = time(runs, || {
        store
            .window(since_30d, None, 1000, MODEL_LIMIT)
            .expect("window")
    });
    assert_eq!(window.totals.requests, rows);
    table.add("`/stats?since=30d` (store part)", ms(took));
    let (took, _) = time(runs, || {
        store.window(None, None, 1000, MODEL_LIMIT).expect("window")
    });
    table.add("`/stats` lifetime (store part)", ms(took));

    if hostile > 0 {
        // Then a burst of hostile requests over the last minute, each bringing a new model,
        // credential and session: the kept keys must be the newest, whatever the window.
        let burst_ms = 60_000;
        let start_ms = store_now_ms() - burst_ms;
        let seconds = fill(&store, hostile, |i| {
            hostile_row(i, start_ms + (burst_ms as u64 * i / hostile) as i64)
        });
        table.add(
            format!("writer, {hostile} hostile rows (rows/s)"),
            format!("{:.0}", hostile as f64 / seconds),
        );
        let now_ms = store_now_ms();
        for (label, since) in [
            ("lifetime", None),
            ("since=1h", Some(now_ms - 3_600_000)),
            ("since=5m", Some(now_ms - 300_000)),
            ("since=30s", Some(now_ms - 30_000)),
        ] {
            let (took, window) = time(runs, || {
                store
                    .window(since, None, 1000, MODEL_LIMIT)
                    .expect("window")
            });
            let newest = format!("session-{}", hostile - 1);
            assert!(
                window.by_session.iter().any(|s| s.session == newest),
                "{newest} left out"
            );
            assert!(window.by_session.len() <= 1000);
            assert!(window.by_credential.len() <= 1000);
            let kept: u64 = window.by_credential.values().map(|c| c.requests).sum();
            // Every row has a credential: those kept and those folded make the total.
            assert_eq!(
                kept + window.folded["by_credential"],
                window.totals.requests
            );
            table.add(
                format!("`/stats?{label}` after {hostile} hostile keys (store part)"),
                ms(took),
            );
        }
    }
    store.close().expect("close");

    println!("\n| measure | {} |\n|---|---:|", target.backend_name());
    for (measure, value) in &table.0 {
        println!("| {measure} | {value} |");
    }
}

/// The models `/stats` asks the store for: the price table's plus the bound of others.
const MODEL_LIMIT: usize = 200 + 12;

fn store_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}
