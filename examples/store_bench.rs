//! Fills a store with a million requests spread over the last 30 days, then times the writer
//! (rows/s), the store's size per million rows, and the queries behind `/usage` and `/stats`.
//!
//! Run: `cargo run --release --example store_bench -- [--rows 1000000] [--db PATH] [--pg URL]`
//! (SQLite in a temporary directory unless `--db` or `--pg` is given). Prints one line per
//! measurement.

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
        credential: format!("client_oauth:{caller:012x}"),
        caller: format!("caller-{caller}"),
        session: format!("{session:08x}-7959-40b6-be6e-3b4a31afd82c"),
        agent: if rng.below(4) == 0 {
            format!("agent-{}", rng.below(1000))
        } else {
            String::new()
        },
        parent_agent: String::new(),
        project: format!("project-{}", caller * 2 + rng.below(2)),
        input_tokens: rng.below(20_000),
        output_tokens: rng.below(4_000),
        cache_write_5m_tokens: rng.below(2_000),
        cache_write_1h_tokens: 0,
        cache_read_tokens: rng.below(100_000),
        web_search_requests: u64::from(rng.below(100) == 0),
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

fn time<T>(label: &str, runs: usize, mut run: impl FnMut() -> T) -> T {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(run());
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "{label}: median {:.1} ms, min {:.1} ms ({runs} runs)",
        times[runs / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    );
    last.expect("at least one run")
}

fn main() {
    let rows: u64 = arg("--rows").map_or(1_000_000, |r| r.parse().expect("--rows N"));
    let temp = tempfile::tempdir().expect("temp dir");
    let sqlite_path = arg("--db").map_or_else(|| temp.path().join("sluice.db"), Into::into);
    let target = match arg("--pg") {
        Some(url) => Target::Postgres(url),
        None => Target::Sqlite(sqlite_path.clone()),
    };
    let options = StoreOptions::new(target.clone());
    let store = store::open(options.clone()).expect("open store");

    let now_ms = store_now_ms();
    let span_ms = 30 * 86_400_000 - 3_600_000;
    let mut rng = Rng(0x5eed);
    let started = Instant::now();
    let chunk = 2_000u64;
    let mut made = 0u64;
    while made < rows {
        let n = chunk.min(rows - made);
        let batch: Vec<StoreRow> = (made..made + n)
            .map(|i| {
                let at = now_ms - span_ms + (span_ms as u64 * i / rows) as i64;
                row(&mut rng, at, i / 200)
            })
            .collect();
        // Stay under the queue's bound: a benchmark must not drop rows.
        while store.status().pending > options.queue_rows as u64 / 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        store.submit(batch);
        made += n;
    }
    while store.status().rows_written < rows {
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let status = store.status();
    println!(
        "write: {rows} rows in {:.1} s = {:.0} rows/s (dropped {}, failures {})",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        status.dropped,
        status.failures
    );
    store.close().expect("close");
    drop(store);

    if let Target::Sqlite(path) = &target {
        let conn = rusqlite::Connection::open(path).expect("open for size");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        let bytes = std::fs::metadata(path).expect("size").len();
        let count = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .expect("count")
        };
        println!(
            "size: {:.1} MB for {rows} rows = {:.1} MB per million (raw {}, usage_15m {}, sessions_15m {})",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 * 1e6 / rows as f64,
            count("requests"),
            count("usage_15m"),
            count("sessions_15m"),
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
        let report = time(&format!("/usage?{query}"), 5, || {
            store.usage(&q, now).expect("usage")
        });
        assert_eq!(
            report.totals.requests,
            report.rows.iter().map(|r| r.counters.requests).sum::<u64>()
        );
        if query == "group_by=day,model" {
            assert_eq!(report.totals.requests, rows);
        }
    }
    let since_30d = Some(now_ms - 30 * 86_400_000 + 123);
    let window = time("/stats?since=30d (window, 1000 sessions)", 5, || {
        store.window(since_30d, None, 1000, 1000).expect("window")
    });
    assert_eq!(window.totals.requests, rows);
    time("/stats lifetime (window, 1000 sessions)", 5, || {
        store.window(None, None, 1000, 1000).expect("window")
    });
    store.close().expect("close");
}

fn store_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}
