//! Fills a store with a month of known team traffic (tests/support/known_rows.rs) through the
//! store's own writer, and writes the rows themselves as JSON so that a test can work out every
//! sum the dashboard shows without asking sluice.
//!
//! Run: `cargo run --example fill_store -- --db DIR/sluice.db --known DIR/known.json
//! [--seed N]`. Prints the last 24 h, 7 d and 30 d totals as JSON.
//! The database must not exist yet: rows are never added to someone's real store.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sluice::store::{self, row_of, StoreOptions, StoreRow, Target};

#[path = "../tests/support/known_rows.rs"]
mod known_rows;

struct Args {
    db: PathBuf,
    known: PathBuf,
    seed: u64,
}

fn args() -> Result<Args, String> {
    let mut db = None;
    let mut known = None;
    let mut seed = 2026;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => db = Some(PathBuf::from(value()?)),
            "--known" => known = Some(PathBuf::from(value()?)),
            "--seed" => seed = value()?.parse().map_err(|_| "--seed takes a number")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let need = |v: Option<PathBuf>, name: &str| v.ok_or(format!("{name} is required"));
    Ok(Args {
        db: need(db, "--db")?,
        known: need(known, "--known")?,
        seed,
    })
}

fn row_json(row: &StoreRow) -> Value {
    json!({
        "finished_ms": row.finished_ms,
        "model": &*row.model,
        "caller": &*row.caller,
        "project": &*row.project,
        "provider": &*row.provider,
        "client": &*row.client,
        "session": &*row.session,
        "agent": &*row.agent,
        "credential": &*row.credential,
        "status": row.status,
        "outcome": &*row.outcome,
        "streamed": row.streamed,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cache_creation_input_tokens": row.cache_write_5m_tokens + row.cache_write_1h_tokens,
        "cache_read_input_tokens": row.cache_read_tokens,
        "web_search_requests": row.web_search_requests,
        "cost_usd": row.cost_usd,
    })
}

fn totals(rows: &[StoreRow], since_ms: i64) -> Value {
    let mut requests = 0u64;
    let mut tokens = 0u64;
    let mut cost = 0.0;
    for row in rows.iter().filter(|r| r.finished_ms >= since_ms) {
        requests += 1;
        tokens += row.input_tokens
            + row.output_tokens
            + row.cache_write_5m_tokens
            + row.cache_write_1h_tokens
            + row.cache_read_tokens;
        cost += row.cost_usd;
    }
    json!({"requests": requests, "tokens": tokens, "cost_usd": cost})
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2);
        }
    };
    if args.db.exists() {
        eprintln!(
            "error: {} exists; fill_store only fills a new store",
            args.db.display()
        );
        std::process::exit(1);
    }
    let now = SystemTime::now();
    let finished = known_rows::known_requests(now, args.seed);
    let rows: Vec<StoreRow> = finished.iter().map(|f| row_of(f, "fill")).collect();

    let mut options = StoreOptions::new(Target::Sqlite(args.db.clone()));
    options.commit_interval = Duration::from_millis(50);
    let handle = store::open(options).unwrap_or_else(|err| panic!("{err}"));
    handle.submit(rows.clone());
    handle.close().unwrap_or_else(|err| panic!("{err}"));
    let written = handle.status().rows_written;
    assert_eq!(written, rows.len() as u64, "every row written");

    let known = json!({
        "filled_at_ms": unix_ms(now),
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
    });
    std::fs::write(&args.known, known.to_string()).unwrap_or_else(|err| panic!("{err}"));

    let now_ms = unix_ms(now);
    let hour = 3_600_000;
    println!(
        "{}",
        json!({
            "rows": rows.len(),
            "last_24h": totals(&rows, now_ms - 24 * hour),
            "last_7d": totals(&rows, now_ms - 7 * 24 * hour),
            "last_30d": totals(&rows, now_ms - 30 * 24 * hour),
        })
    );
}
