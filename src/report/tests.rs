//! Reports drawn from fixed `/usage` answers, and the HTTP source against a tiny local server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

use serde_json::{json, Value};

use super::*;

/// One `/usage` row: its dimension columns, then input, output, cache write, cache read, cost.
fn row(keys: &[(&str, &str)], tokens: [u64; 4], cost: f64) -> Value {
    let mut row = serde_json::Map::new();
    for (name, value) in keys {
        row.insert(name.to_string(), json!(value));
    }
    row.insert("requests".into(), json!(1));
    row.insert("errors".into(), json!(0));
    row.insert("input_tokens".into(), json!(tokens[0]));
    row.insert("output_tokens".into(), json!(tokens[1]));
    row.insert("cache_creation_input_tokens".into(), json!(tokens[2]));
    row.insert("cache_read_input_tokens".into(), json!(tokens[3]));
    row.insert("cost_usd".into(), json!(cost));
    Value::Object(row)
}

/// A `/usage` answer whose totals were added up by hand by the caller.
fn usage(group_by: &[&str], rows: Vec<Value>, totals: [u64; 4], cost: f64) -> String {
    json!({
        "since": "2026-11-25T00:00:00Z",
        "until": "2026-11-28T00:00:00Z",
        "group_by": group_by,
        "rows": rows,
        "totals": {
            "requests": rows.len(), "errors": 0,
            "input_tokens": totals[0], "output_tokens": totals[1],
            "cache_creation_input_tokens": totals[2], "cache_read_input_tokens": totals[3],
            "cost_usd": cost
        }
    })
    .to_string()
}

/// A report's arguments as `sluice report KIND [--by BY]` would give them.
fn args(kind: ReportKind, by: Option<Breakdown>) -> ReportArgs {
    ReportArgs {
        kind,
        since: None,
        until: None,
        by,
        json: false,
        csv: false,
        url: None,
        db: None,
    }
}

/// Answers every query with one fixed body and remembers what was asked.
struct Fixed {
    body: String,
    asked: std::cell::RefCell<Vec<String>>,
}

impl UsageSource for Fixed {
    fn fetch(&self, query: &UsageQuery, format: UsageFormat) -> Result<String, ReportError> {
        self.asked.borrow_mut().push(query.to_query_string(format));
        Ok(self.body.clone())
    }

    fn describe(&self) -> String {
        "fixed".into()
    }
}

fn report(args: &ReportArgs, body: &str) -> (String, Vec<String>) {
    let source = Fixed {
        body: body.to_string(),
        asked: Default::default(),
    };
    let mut out = Vec::new();
    run(args, &source, &mut out, TableStyle::plain()).unwrap();
    let asked = source.asked.take();
    (String::from_utf8(out).unwrap(), asked)
}

const COST_NOTE: &str =
    "Cost at API prices; for subscription (OAuth) traffic it is the API-equivalent cost, not a bill.";

/// Two days, the first with two models: the day line sums both (1,000 + 2,000 input, …) and
/// lists the dearer model first.
fn daily_usage() -> String {
    usage(
        &["day", "model"],
        vec![
            row(
                &[("day", "2026-11-25"), ("model", "claude-haiku-4-5")],
                [1000, 200, 0, 5000],
                0.0025,
            ),
            row(
                &[("day", "2026-11-25"), ("model", "claude-sonnet-4-5")],
                [2000, 1000, 4000, 10000],
                0.039,
            ),
            row(
                &[("day", "2026-11-26"), ("model", "claude-sonnet-4-5")],
                [1500, 12345, 0, 1234567],
                0.5589951,
            ),
        ],
        // 1000+2000+1500, 200+1000+12345, 4000, 5000+10000+1234567
        [4500, 13545, 4000, 1249567],
        0.6004951,
    )
}

#[test]
fn daily_lists_models_per_day_with_a_total_line() {
    let (text, asked) = report(&args(ReportKind::Daily, None), &daily_usage());
    assert!(asked[0].starts_with("group_by=day%2Cmodel&"), "{asked:?}");
    let expected = format!(
        "\
sluice usage by day, 2026-11-25T00:00:00Z to 2026-11-28T00:00:00Z
╭────────────┬─────────────────────┬───────┬────────┬─────────────┬────────────┬──────────────┬────────────╮
│ Date       ┆ Models              ┆ Input ┆ Output ┆ Cache Write ┆ Cache Read ┆ Total Tokens ┆ Cost (USD) │
╞════════════╪═════════════════════╪═══════╪════════╪═════════════╪════════════╪══════════════╪════════════╡
│ 2026-11-25 ┆ - claude-sonnet-4-5 ┆ 3,000 ┆  1,200 ┆       4,000 ┆     15,000 ┆       23,200 ┆    $0.0415 │
│            ┆ - claude-haiku-4-5  ┆       ┆        ┆             ┆            ┆              ┆            │
├╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ 2026-11-26 ┆ - claude-sonnet-4-5 ┆ 1,500 ┆ 12,345 ┆           0 ┆  1,234,567 ┆    1,248,412 ┆    $0.5590 │
├╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ Total      ┆                     ┆ 4,500 ┆ 13,545 ┆       4,000 ┆  1,249,567 ┆    1,271,612 ┆    $0.6005 │
╰────────────┴─────────────────────┴───────┴────────┴─────────────┴────────────┴──────────────┴────────────╯
{COST_NOTE}
"
    );
    assert_eq!(text, expected);
}

fn cases() -> Vec<(ReportKind, Option<Breakdown>, String)> {
    vec![
        (
            ReportKind::Weekly,
            None,
            usage(
                &["week", "model"],
                vec![
                    row(
                        &[("week", "2026-W48"), ("model", "claude-opus-4-5")],
                        [10, 20, 30, 40],
                        0.00155,
                    ),
                    row(
                        &[("week", "2026-W47"), ("model", "claude-sonnet-4-5")],
                        [100, 200, 0, 0],
                        0.0033,
                    ),
                ],
                [110, 220, 30, 40],
                0.00485,
            ),
        ),
        (
            ReportKind::Monthly,
            None,
            usage(
                &["month", "model"],
                vec![
                    row(
                        &[("month", "2026-11"), ("model", "claude-sonnet-4-5")],
                        [1_000_000, 100_000, 0, 2_000_000],
                        5.1,
                    ),
                    row(
                        &[("month", "2026-10"), ("model", "claude-sonnet-4-5")],
                        [3, 4, 0, 0],
                        0.000069,
                    ),
                ],
                [1_000_003, 100_004, 0, 2_000_000],
                5.100069,
            ),
        ),
        (
            ReportKind::Blocks,
            None,
            usage(
                &["block", "model"],
                vec![
                    row(
                        &[
                            ("block", "2026-11-27T15:00:00Z"),
                            ("model", "claude-sonnet-4-5"),
                        ],
                        [10, 10, 0, 0],
                        0.00018,
                    ),
                    row(
                        &[
                            ("block", "2026-11-27T09:00:00Z"),
                            ("model", "claude-sonnet-4-5"),
                        ],
                        [20, 20, 0, 0],
                        0.00036,
                    ),
                ],
                [30, 30, 0, 0],
                0.00054,
            ),
        ),
        (
            ReportKind::Sessions,
            None,
            usage(
                &["session", "model"],
                vec![
                    row(
                        &[
                            ("session", "de638c79-7959-40b6-be6e-3b4a31afd82c"),
                            ("model", "claude-sonnet-4-5"),
                        ],
                        [100, 100, 0, 0],
                        0.0018,
                    ),
                    row(&[("model", "claude-sonnet-4-5")], [1000, 1000, 0, 0], 0.018),
                ],
                [1100, 1100, 0, 0],
                0.0198,
            ),
        ),
        (
            ReportKind::Callers,
            None,
            usage(
                &["caller", "model"],
                vec![
                    row(
                        &[("caller", "alice"), ("model", "claude-haiku-4-5")],
                        [100, 0, 0, 0],
                        0.0001,
                    ),
                    row(
                        &[("caller", "bob"), ("model", "claude-opus-4-5")],
                        [100, 0, 0, 0],
                        0.0005,
                    ),
                    row(
                        &[("caller", "alice"), ("model", "claude-opus-4-5")],
                        [100, 0, 0, 0],
                        0.0005,
                    ),
                ],
                [300, 0, 0, 0],
                0.0011,
            ),
        ),
        (
            ReportKind::Models,
            None,
            usage(
                &["model"],
                vec![
                    row(&[("model", "claude-haiku-4-5")], [1000, 1000, 0, 0], 0.006),
                    row(&[("model", "claude-opus-4-5")], [1000, 1000, 0, 0], 0.03),
                ],
                [2000, 2000, 0, 0],
                0.036,
            ),
        ),
        (
            ReportKind::Projects,
            Some(Breakdown::Caller),
            usage(
                &["project", "caller"],
                vec![
                    row(
                        &[("project", "billing"), ("caller", "alice")],
                        [10, 0, 0, 0],
                        0.00003,
                    ),
                    row(
                        &[("project", "web"), ("caller", "bob")],
                        [1000, 0, 0, 0],
                        0.003,
                    ),
                    row(
                        &[("project", "billing"), ("caller", "bob")],
                        [20, 0, 0, 0],
                        0.00006,
                    ),
                ],
                [1030, 0, 0, 0],
                0.00309,
            ),
        ),
        (ReportKind::Daily, Some(Breakdown::Model), daily_usage()),
    ]
}

// Each table below was checked by hand against its rows: sums, order, rounding.

#[test]
fn weekly_sorts_weeks_in_time_order() {
    let (kind, by, body) = cases().remove(0);
    assert_eq!((kind, by), (ReportKind::Weekly, None));
    let (text, asked) = report(&args(kind, by), &body);
    assert_eq!(asked, ["group_by=week%2Cmodel&format=json"]);
    let expected = "\
sluice usage by week, 2026-11-25T00:00:00Z to 2026-11-28T00:00:00Z
╭──────────┬─────────────────────┬───────┬────────┬─────────────┬────────────┬──────────────┬────────────╮
│ Week     ┆ Models              ┆ Input ┆ Output ┆ Cache Write ┆ Cache Read ┆ Total Tokens ┆ Cost (USD) │
╞══════════╪═════════════════════╪═══════╪════════╪═════════════╪════════════╪══════════════╪════════════╡
│ 2026-W47 ┆ - claude-sonnet-4-5 ┆   100 ┆    200 ┆           0 ┆          0 ┆          300 ┆    $0.0033 │
├╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ 2026-W48 ┆ - claude-opus-4-5   ┆    10 ┆     20 ┆          30 ┆         40 ┆          100 ┆    $0.0016 │
├╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ Total    ┆                     ┆   110 ┆    220 ┆          30 ┆         40 ┆          400 ┆    $0.0049 │
╰──────────┴─────────────────────┴───────┴────────┴─────────────┴────────────┴──────────────┴────────────╯
";
    assert_eq!(text, format!("{expected}{COST_NOTE}\n"));
}

#[test]
fn monthly_adds_thousands_separators() {
    let (kind, by, body) = cases().remove(1);
    assert_eq!((kind, by), (ReportKind::Monthly, None));
    let (text, asked) = report(&args(kind, by), &body);
    assert_eq!(asked, ["group_by=month%2Cmodel&format=json"]);
    let expected = "\
sluice usage by month, 2026-11-25T00:00:00Z to 2026-11-28T00:00:00Z
╭─────────┬─────────────────────┬───────────┬─────────┬─────────────┬────────────┬──────────────┬────────────╮
│ Month   ┆ Models              ┆     Input ┆  Output ┆ Cache Write ┆ Cache Read ┆ Total Tokens ┆ Cost (USD) │
╞═════════╪═════════════════════╪═══════════╪═════════╪═════════════╪════════════╪══════════════╪════════════╡
│ 2026-10 ┆ - claude-sonnet-4-5 ┆         3 ┆       4 ┆           0 ┆          0 ┆            7 ┆    $0.0001 │
├╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ 2026-11 ┆ - claude-sonnet-4-5 ┆ 1,000,000 ┆ 100,000 ┆           0 ┆  2,000,000 ┆    3,100,000 ┆    $5.1000 │
├╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ Total   ┆                     ┆ 1,000,003 ┆ 100,004 ┆           0 ┆  2,000,000 ┆    3,100,007 ┆    $5.1001 │
╰─────────┴─────────────────────┴───────────┴─────────┴─────────────┴────────────┴──────────────┴────────────╯
";
    assert_eq!(text, format!("{expected}{COST_NOTE}\n"));
}

#[test]
fn blocks_show_start_times_in_time_order() {
    let (kind, by, body) = cases().remove(2);
    assert_eq!((kind, by), (ReportKind::Blocks, None));
    let (text, asked) = report(&args(kind, by), &body);
    assert_eq!(asked, ["group_by=block%2Cmodel&format=json"]);
    let expected = "\
sluice usage by block, 2026-11-25T00:00:00Z to 2026-11-28T00:00:00Z
╭──────────────────┬─────────────────────┬───────┬────────┬─────────────┬────────────┬──────────────┬────────────╮
│ Block start      ┆ Models              ┆ Input ┆ Output ┆ Cache Write ┆ Cache Read ┆ Total Tokens ┆ Cost (USD) │
╞══════════════════╪═════════════════════╪═══════╪════════╪═════════════╪════════════╪══════════════╪════════════╡
│ 2026-11-27 09:00 ┆ - claude-sonnet-4-5 ┆    20 ┆     20 ┆           0 ┆          0 ┆           40 ┆    $0.0004 │
├╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ 2026-11-27 15:00 ┆ - claude-sonnet-4-5 ┆    10 ┆     10 ┆           0 ┆          0 ┆           20 ┆    $0.0002 │
├╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ Total            ┆                     ┆    30 ┆     30 ┆           0 ┆          0 ┆           60 ┆    $0.0005 │
╰──────────────────┴─────────────────────┴───────┴────────┴─────────────┴────────────┴──────────────┴────────────╯
";
    assert_eq!(text, format!("{expected}{COST_NOTE}\n"));
}

#[test]
fn sessions_busiest_first_and_unnamed_as_none() {
    let (kind, by, body) = cases().remove(3);
    assert_eq!((kind, by), (ReportKind::Sessions, None));
    let (text, asked) = report(&args(kind, by), &body);
    assert_eq!(asked, ["group_by=session%2Cmodel&format=json"]);
    let expected = "\
sluice usage by session, 2026-11-25T00:00:00Z to 2026-11-28T00:00:00Z
╭──────────────────────────────────────┬─────────────────────┬───────┬────────┬─────────────┬────────────┬──────────────┬────────────╮
│ Session                              ┆ Models              ┆ Input ┆ Output ┆ Cache Write ┆ Cache Read ┆ Total Tokens ┆ Cost (USD) │
╞══════════════════════════════════════╪═════════════════════╪═══════╪════════╪═════════════╪════════════╪══════════════╪════════════╡
│ (none)                               ┆ - claude-sonnet-4-5 ┆ 1,000 ┆  1,000 ┆           0 ┆          0 ┆        2,000 ┆    $0.0180 │
├╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ de638c79-7959-40b6-be6e-3b4a31afd82c ┆ - claude-sonnet-4-5 ┆   100 ┆    100 ┆           0 ┆          0 ┆          200 ┆    $0.0018 │
├╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ Total                                ┆                     ┆ 1,100 ┆  1,100 ┆           0 ┆          0 ┆        2,200 ┆    $0.0198 │
╰──────────────────────────────────────┴─────────────────────┴───────┴────────┴─────────────┴────────────┴──────────────┴────────────╯
";
    assert_eq!(text, format!("{expected}{COST_NOTE}\n"));
}

#[test]
fn callers_sum_their_models() {
    let (kind, by, body) = cases().remove(4);
    assert_eq!((kind, by), (ReportKind::Callers, None));
    let (text, asked) = report(&args(kind, by), &body);
    assert_eq!(asked, ["group_by=caller%2Cmodel&format=json"]);
    let expected = "\
sluice usage by caller, 2026-11-25T00:00:00Z to 2026-11-28T00:00:00Z
╭────────┬────────────────────┬───────┬────────┬─────────────┬────────────┬──────────────┬────────────╮
│ Caller ┆ Models             ┆ Input ┆ Output ┆ Cache Write ┆ Cache Read ┆ Total Tokens ┆ Cost (USD) │
╞════════╪════════════════════╪═══════╪════════╪═════════════╪════════════╪══════════════╪════════════╡
│ alice  ┆ - claude-opus-4-5  ┆   200 ┆      0 ┆           0 ┆          0 ┆          200 ┆    $0.0006 │
│        ┆ - claude-haiku-4-5 ┆       ┆        ┆             ┆            ┆              ┆            │
├╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ bob    ┆ - claude-opus-4-5  ┆   100 ┆      0 ┆           0 ┆          0 ┆          100 ┆    $0.0005 │
├╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ Total  ┆                    ┆   300 ┆      0 ┆           0 ┆          0 ┆          300 ┆    $0.0011 │
╰────────┴────────────────────┴───────┴────────┴─────────────┴────────────┴──────────────┴────────────╯
";
    assert_eq!(text, format!("{expected}{COST_NOTE}\n"));
}

#[test]
fn models_need_no_models_column() {
    let (kind, by, body) = cases().remove(5);
    assert_eq!((kind, by), (ReportKind::Models, None));
    let (text, asked) = report(&args(kind, by), &body);
    assert_eq!(asked, ["group_by=model&format=json"]);
    let expected = "\
sluice usage by model, 2026-11-25T00:00:00Z to 2026-11-28T00:00:00Z
╭──────────────────┬───────┬────────┬─────────────┬────────────┬──────────────┬────────────╮
│ Model            ┆ Input ┆ Output ┆ Cache Write ┆ Cache Read ┆ Total Tokens ┆ Cost (USD) │
╞══════════════════╪═══════╪════════╪═════════════╪════════════╪══════════════╪════════════╡
│ claude-opus-4-5  ┆ 1,000 ┆  1,000 ┆           0 ┆          0 ┆        2,000 ┆    $0.0300 │
├╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ claude-haiku-4-5 ┆ 1,000 ┆  1,000 ┆           0 ┆          0 ┆        2,000 ┆    $0.0060 │
├╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ Total            ┆ 2,000 ┆  2,000 ┆           0 ┆          0 ┆        4,000 ┆    $0.0360 │
╰──────────────────┴───────┴────────┴─────────────┴────────────┴──────────────┴────────────╯
";
    assert_eq!(text, format!("{expected}{COST_NOTE}\n"));
}

#[test]
fn projects_by_caller_get_one_line_per_pair() {
    let (kind, by, body) = cases().remove(6);
    assert_eq!((kind, by), (ReportKind::Projects, Some(Breakdown::Caller)));
    let (text, asked) = report(&args(kind, by), &body);
    assert_eq!(asked, ["group_by=project%2Ccaller&format=json"]);
    let expected = "\
sluice usage by project and caller, 2026-11-25T00:00:00Z to 2026-11-28T00:00:00Z
╭─────────┬────────┬───────┬────────┬─────────────┬────────────┬──────────────┬────────────╮
│ Project ┆ Caller ┆ Input ┆ Output ┆ Cache Write ┆ Cache Read ┆ Total Tokens ┆ Cost (USD) │
╞═════════╪════════╪═══════╪════════╪═════════════╪════════════╪══════════════╪════════════╡
│ web     ┆ bob    ┆ 1,000 ┆      0 ┆           0 ┆          0 ┆        1,000 ┆    $0.0030 │
├╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ billing ┆ bob    ┆    20 ┆      0 ┆           0 ┆          0 ┆           20 ┆    $0.0001 │
├╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│         ┆ alice  ┆    10 ┆      0 ┆           0 ┆          0 ┆           10 ┆    $0.0000 │
├╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ Total   ┆        ┆ 1,030 ┆      0 ┆           0 ┆          0 ┆        1,030 ┆    $0.0031 │
╰─────────┴────────┴───────┴────────┴─────────────┴────────────┴──────────────┴────────────╯
";
    assert_eq!(text, format!("{expected}{COST_NOTE}\n"));
}

#[test]
fn daily_by_model_gets_one_line_per_model() {
    let (kind, by, body) = cases().remove(7);
    assert_eq!((kind, by), (ReportKind::Daily, Some(Breakdown::Model)));
    let (text, asked) = report(&args(kind, by), &body);
    assert_eq!(asked, ["group_by=day%2Cmodel&format=json"]);
    let expected = "\
sluice usage by day and model, 2026-11-25T00:00:00Z to 2026-11-28T00:00:00Z
╭────────────┬───────────────────┬───────┬────────┬─────────────┬────────────┬──────────────┬────────────╮
│ Date       ┆ Model             ┆ Input ┆ Output ┆ Cache Write ┆ Cache Read ┆ Total Tokens ┆ Cost (USD) │
╞════════════╪═══════════════════╪═══════╪════════╪═════════════╪════════════╪══════════════╪════════════╡
│ 2026-11-25 ┆ claude-sonnet-4-5 ┆ 2,000 ┆  1,000 ┆       4,000 ┆     10,000 ┆       17,000 ┆    $0.0390 │
├╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│            ┆ claude-haiku-4-5  ┆ 1,000 ┆    200 ┆           0 ┆      5,000 ┆        6,200 ┆    $0.0025 │
├╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ 2026-11-26 ┆ claude-sonnet-4-5 ┆ 1,500 ┆ 12,345 ┆           0 ┆  1,234,567 ┆    1,248,412 ┆    $0.5590 │
├╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌╌╌┼╌╌╌╌╌╌╌╌╌╌╌╌┤
│ Total      ┆                   ┆ 4,500 ┆ 13,545 ┆       4,000 ┆  1,249,567 ┆    1,271,612 ┆    $0.6005 │
╰────────────┴───────────────────┴───────┴────────┴─────────────┴────────────┴──────────────┴────────────╯
";
    assert_eq!(text, format!("{expected}{COST_NOTE}\n"));
}

#[test]
fn providers_and_clients_split_lines_and_head_their_columns() {
    let body = usage(
        &["day", "client"],
        vec![
            row(
                &[("day", "2026-11-25"), ("client", "codex")],
                [900, 100, 0, 0],
                0.5,
            ),
            row(
                &[("day", "2026-11-25"), ("client", "claude-code")],
                [100, 10, 0, 0],
                0.25,
            ),
        ],
        [1000, 110, 0, 0],
        0.75,
    );
    let (text, asked) = report(&args(ReportKind::Daily, Some(Breakdown::Client)), &body);
    assert_eq!(asked, ["group_by=day%2Cclient&format=json"]);
    assert!(
        text.starts_with("sluice usage by day and client, "),
        "{text}"
    );
    let header = text.lines().find(|l| l.contains("Date")).unwrap();
    assert!(header.contains("┆ Client "), "{header}");
    let codex = text.lines().position(|l| l.contains("codex")).unwrap();
    let claude = text
        .lines()
        .position(|l| l.contains("claude-code"))
        .unwrap();
    assert!(codex < claude, "busiest first\n{text}");

    let body = usage(
        &["provider"],
        vec![row(&[("provider", "openai")], [1, 2, 0, 0], 0.1)],
        [1, 2, 0, 0],
        0.1,
    );
    let (text, asked) = report(
        &args(ReportKind::Providers, Some(Breakdown::Provider)),
        &body,
    );
    assert_eq!(asked, ["group_by=provider&format=json"]);
    assert!(text.contains("│ Provider "), "{text}");
    assert!(text.contains("openai"), "{text}");
}

#[test]
fn json_and_csv_print_usage_answers_unchanged() {
    let body = daily_usage();
    let mut json_args = args(ReportKind::Daily, None);
    json_args.json = true;
    let (text, asked) = report(&json_args, &body);
    assert_eq!(text, format!("{body}\n"));
    assert!(asked[0].ends_with("&format=json"), "{asked:?}");

    let csv = "day,model,requests\n2026-11-25,claude-sonnet-4-5,1\n";
    let mut csv_args = args(ReportKind::Daily, None);
    csv_args.csv = true;
    let (text, asked) = report(&csv_args, csv);
    assert_eq!(text, csv);
    assert!(asked[0].ends_with("&format=csv"), "{asked:?}");
}

#[test]
fn an_empty_range_says_what_to_do() {
    let body = usage(&["day", "model"], vec![], [0, 0, 0, 0], 0.0);
    let (text, _) = report(&args(ReportKind::Daily, None), &body);
    assert!(text.contains("No requests in this range"), "{text}");
    assert!(!text.contains('╭'), "{text}");
}

#[test]
fn dates_reach_the_query() {
    let mut a = args(ReportKind::Monthly, Some(Breakdown::Project));
    a.since = Some("20261101".into());
    a.until = Some("2026-11-27".into());
    let query = a.query().unwrap();
    assert_eq!(query.group_by, [Dimension::Month, Dimension::Project]);
    assert_eq!(query.since.as_deref(), Some("2026-11-01"));
    assert_eq!(query.until.as_deref(), Some("2026-11-27"));
}

/// Serves one HTTP answer on a free loopback port and hands back the request head it read.
fn one_answer(status: &str, body: &str) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut stream = stream;
        stream.write_all(answer.as_bytes()).unwrap();
        tx.send(head).unwrap();
    });
    (base, rx)
}

fn daily_query() -> UsageQuery {
    args(ReportKind::Daily, None).query().unwrap()
}

#[test]
fn http_source_sends_the_query_and_the_bearer_token() {
    let body = daily_usage();
    let (base, head) = one_answer("200 OK", &body);
    let source = HttpSource::new(&format!("{base}/"), Some("admin-secret".into()));
    let got = source.fetch(&daily_query(), UsageFormat::Json).unwrap();
    assert_eq!(got, body);
    let head = head.recv().unwrap();
    let request_line = head.lines().next().unwrap();
    assert!(
        request_line.starts_with("GET /usage?group_by=day%2Cmodel&"),
        "{request_line}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer admin-secret\r\n"),
        "{head}"
    );
}

#[test]
fn http_source_without_token_sends_no_authorization() {
    let (base, head) = one_answer("200 OK", &daily_usage());
    HttpSource::new(&base, Some(String::new()))
        .fetch(&daily_query(), UsageFormat::Json)
        .unwrap();
    let head = head.recv().unwrap().to_ascii_lowercase();
    assert!(!head.contains("authorization"), "{head}");
}

#[test]
fn a_401_says_whether_the_token_was_missing_or_wrong() {
    let unauthorized = r#"{"type":"error","error":{"type":"authentication_error","message":"sluice: missing or wrong admin token"}}"#;
    let (base, _) = one_answer("401 Unauthorized", unauthorized);
    let err = HttpSource::new(&base, None)
        .fetch(&daily_query(), UsageFormat::Json)
        .unwrap_err();
    assert!(matches!(err, ReportError::TokenMissing { .. }), "{err}");
    assert!(err.to_string().contains("SLUICE_ADMIN_TOKEN"), "{err}");

    let (base, _) = one_answer("401 Unauthorized", unauthorized);
    let err = HttpSource::new(&base, Some("wrong".into()))
        .fetch(&daily_query(), UsageFormat::Json)
        .unwrap_err();
    assert!(matches!(err, ReportError::TokenRefused { .. }), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the token never shows: {err}"
    );
}

#[test]
fn other_failures_carry_sluices_message() {
    let (base, _) = one_answer(
        "400 Bad Request",
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"sluice: group_by takes at most two"}}"#,
    );
    let err = HttpSource::new(&base, None)
        .fetch(&daily_query(), UsageFormat::Json)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("sluice at {base} answered 400: sluice: group_by takes at most two")
    );
    let (base, _) = one_answer("404 Not Found", "");
    let err = HttpSource::new(&base, None)
        .fetch(&daily_query(), UsageFormat::Json)
        .unwrap_err();
    assert!(matches!(err, ReportError::NoUsageEndpoint { .. }), "{err}");
}

#[test]
fn a_stopped_sluice_is_reported_as_not_running() {
    // Bind and drop: the port was free a moment ago and nothing listens on it now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let err = HttpSource::new(&base, None)
        .fetch(&daily_query(), UsageFormat::Json)
        .unwrap_err();
    assert!(matches!(err, ReportError::NotRunning { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "sluice is not running at {base} (connection refused); start it, or pass --url or --db"
        )
    );
}

#[test]
fn a_table_from_http_equals_the_table_from_the_same_body() {
    let body = daily_usage();
    let (base, _) = one_answer("200 OK", &body);
    let source = HttpSource::new(&base, None);
    let mut out = Vec::new();
    run(
        &args(ReportKind::Daily, None),
        &source,
        &mut out,
        TableStyle::plain(),
    )
    .unwrap();
    let (expected, _) = report(&args(ReportKind::Daily, None), &body);
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn a_narrow_terminal_gets_a_table_that_fits() {
    let doc = UsageDoc::parse(&daily_usage()).unwrap();
    let style = TableStyle::plain().with_width(80);
    let text = render_table(ReportKind::Daily, None, &doc, style);
    let table: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(['╭', '│', '├', '╞', '╰']))
        .collect();
    assert!(table.len() > 5, "{text}");
    for line in table {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    // Numbers are never broken; the cache columns give way instead, and the table says so.
    for whole in ["1,248,412", "1,271,612", "$0.6005", "13,545", "2026-11-26"] {
        assert!(text.contains(whole), "{whole} broken: {text}");
    }
    assert!(
        !text.contains("Cache Write") && !text.contains("Cache Read"),
        "{text}"
    );
    assert!(text.contains("Cache columns hidden"), "{text}");
    // Wide enough for everything: nothing hidden, nothing wrapped.
    let wide = render_table(
        ReportKind::Daily,
        None,
        &doc,
        TableStyle::plain().with_width(200),
    );
    let (plain, _) = report(&args(ReportKind::Daily, None), &daily_usage());
    assert_eq!(format!("{wide}\n"), plain);
}

#[test]
fn colour_only_when_asked_for() {
    let doc = UsageDoc::parse(&daily_usage()).unwrap();
    let plain = render_table(ReportKind::Daily, None, &doc, TableStyle::plain());
    assert!(!plain.contains('\u{1b}'), "{plain}");
    let coloured = TableStyle::plain().with_color();
    let text = render_table(ReportKind::Daily, None, &doc, coloured);
    assert!(text.contains("\u{1b}["), "{text}");
}

#[test]
fn the_running_block_says_how_long_it_has_left() {
    let (_, _, body) = cases().remove(2);
    let doc = UsageDoc::parse(&body).unwrap();
    let now = time::OffsetDateTime::parse(
        "2026-11-27T16:30:00Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let text = render_table(ReportKind::Blocks, None, &doc, TableStyle::plain().at(now));
    let lines: Vec<&str> = text.lines().collect();
    let started = lines
        .iter()
        .position(|l| l.contains("2026-11-27 15:00"))
        .unwrap();
    assert!(
        lines[started + 1].starts_with("│ active, 3 h 30 min left ┆"),
        "{text}"
    );
    assert_eq!(text.matches("active").count(), 1, "{text}");
}

/// Names a client invented, as an upstream's 404 lets them into the store: a window title (OSC
/// 0), the clipboard (OSC 52), a link (OSC 8), a cleared screen, a carriage return, an 8-bit CSI
/// and a right-to-left override.
const HOSTILE_NAME: &str =
    "x\u{1b}]0;owned\u{7}\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}]8;;http://e\u{1b}\\\
                            \u{1b}[2J\rfake\u{9b}31m\u{202e}gpj.exe";

fn prints_nothing_a_terminal_acts_on(text: &str) {
    assert!(
        !text.contains(|c: char| c != '\n' && crate::printable::must_escape(c)),
        "{text:?}"
    );
}

#[test]
fn terminal_escapes_in_names_are_printed_escaped_in_tables_json_and_csv() {
    let body = usage(
        &["caller", "model"],
        vec![row(
            &[
                ("caller", HOSTILE_NAME),
                ("model", "=HYPERLINK(\"http://e\")"),
            ],
            [1, 1, 0, 0],
            0.01,
        )],
        [1, 1, 0, 0],
        0.01,
    );
    for by in [None, Some(Breakdown::Model)] {
        let (table, _) = report(&args(ReportKind::Callers, by), &body);
        prints_nothing_a_terminal_acts_on(&table);
        assert!(table.contains("x\\u{1b}]0;owned\\u{7}"), "{table}");
        assert!(table.contains("\\u{202e}gpj.exe"), "{table}");
    }

    let mut json_args = args(ReportKind::Callers, None);
    json_args.json = true;
    let (json, _) = report(&json_args, &body);
    prints_nothing_a_terminal_acts_on(&json);
    let same: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(same, serde_json::from_str::<Value>(&body).unwrap());

    // CSV from a sluice that did not escape it: printed escaped all the same.
    let csv = format!("caller,requests\n{HOSTILE_NAME},1\n");
    let mut csv_args = args(ReportKind::Callers, None);
    csv_args.csv = true;
    let (printed, _) = report(&csv_args, &csv);
    prints_nothing_a_terminal_acts_on(&printed);
    assert_eq!(printed.lines().count(), 2, "{printed}");
}
