//! `sluice report` from the command line: where it looks, and how it says what is missing.

use std::net::TcpListener;
use std::process::Command;

const ROUTE: &str =
    "[[routes]]\nprefix = \"/anthropic\"\nupstream = \"https://api.anthropic.com\"\n";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `sluice --settings <file with listen> report ARGS`; returns exit code, stdout, stderr.
fn report(listen_port: u16, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:{listen_port}\"\n{ROUTE}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--settings")
        .arg(&path)
        .arg("report")
        .args(args)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn report_asks_the_sluice_of_the_settings_and_says_when_it_is_not_running() {
    let port = free_port();
    let (code, out, err) = report(port, &["daily"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err.trim(),
        format!(
            "error: sluice is not running at http://127.0.0.1:{port} (connection refused); \
             start it, or pass --url or --db"
        )
    );
}

#[test]
fn report_url_flag_wins_over_the_settings() {
    let other = free_port();
    let (code, _, err) = report(
        free_port(),
        &["monthly", "--url", &format!("http://127.0.0.1:{other}")],
    );
    assert_eq!(code, 1);
    assert!(err.contains(&format!("127.0.0.1:{other}")), "{err}");
}

#[test]
fn report_db_names_a_missing_database_and_a_file_that_holds_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let (code, _, err) = report(free_port(), &["daily", "--db", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no database at") && err.contains("nope.db"),
        "{err}"
    );

    let present = dir.path().join("sluice.db");
    std::fs::write(&present, b"").unwrap();
    let (code, _, err) = report(free_port(), &["daily", "--db", present.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("sluice.db") && err.contains("holds no sluice store"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&present).unwrap(),
        b"",
        "the file is only read"
    );
}

#[test]
fn report_refuses_a_date_it_cannot_read() {
    let (code, _, err) = report(free_port(), &["daily", "--since", "last tuesday"]);
    assert_eq!(code, 1);
    assert!(err.contains("\"last tuesday\" is not a date"), "{err}");
}

#[test]
fn report_sends_the_admin_token_named_by_the_settings() {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut head = String::new();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let body =
            "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"no\"}}";
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        head
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\n{ROUTE}[admin]\ntoken_env = \"REPORT_TEST_TOKEN\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--settings")
        .arg(&path)
        .args(["report", "daily"])
        .env("REPORT_TEST_TOKEN", "t0ken-from-env")
        .output()
        .unwrap();
    let head = server.join().unwrap();
    assert!(
        head.contains("authorization: bearer t0ken-from-env\r\n"),
        "{head}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("refused the admin token (401)"), "{err}");
    assert!(
        !err.contains("t0ken-from-env"),
        "the token never shows: {err}"
    );
}

/// `/dashboard` is served by sluice itself: the page without a token even when one is set (it
/// holds no data), its files from the binary with a policy that keeps it on this host, and
/// nothing else under the path.
#[actix_rt::test]
async fn dashboard_page_and_files_are_served_from_the_binary() {
    use crate::support::{client, sluice, MockUpstream};
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .team()
        .start();
    let mut page = client().get(sluice.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers().get("content-security-policy").unwrap();
    assert!(csp.to_str().unwrap().contains("default-src 'none'"));
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    assert!(html.contains("dashboard/uplot.min.js"), "{html}");
    for file in ["app.js", "app.css", "uplot.min.js", "uplot.min.css"] {
        let response = client()
            .get(sluice.url(&format!("/dashboard/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{file}");
    }
    let slash = client()
        .get(sluice.url("/dashboard/"))
        .send()
        .await
        .unwrap();
    assert_eq!(slash.status(), 308);
    assert_eq!(slash.headers().get("location").unwrap(), "/dashboard");
    let missing = client()
        .get(sluice.url("/dashboard/secrets.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(
        mock.received().is_empty(),
        "nothing under /dashboard goes upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// Every report against a store filled with known rows: table text and --json equal the sums
// worked out here from the rows themselves.

mod known {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, SystemTime};

    use jiff::tz::TimeZone;
    use jiff::Timestamp;
    use serde_json::Value;
    use sluice::store::{self, row_of, StoreOptions, StoreRow, Target};

    use crate::support::known_rows::known_requests;

    #[derive(Debug, Default, Clone, PartialEq)]
    struct Sums {
        requests: u64,
        errors: u64,
        streamed: u64,
        input: u64,
        output: u64,
        cache_write: u64,
        cache_read: u64,
        web_search: u64,
        cost: f64,
    }

    impl Sums {
        fn add(&mut self, row: &StoreRow) {
            self.requests += 1;
            self.errors += u64::from(row.status >= 400 || &*row.outcome == "upstream_error_event");
            self.streamed += u64::from(row.streamed);
            self.input += row.input_tokens;
            self.output += row.output_tokens;
            self.cache_write += row.cache_write_5m_tokens + row.cache_write_1h_tokens;
            self.cache_read += row.cache_read_tokens;
            self.web_search += row.web_search_requests;
            self.cost += row.cost_usd;
        }

        fn of_json(v: &Value) -> Sums {
            let n = |name: &str| v[name].as_u64().unwrap_or_else(|| panic!("{name} in {v}"));
            Sums {
                requests: n("requests"),
                errors: n("errors"),
                streamed: n("streamed"),
                input: n("input_tokens"),
                output: n("output_tokens"),
                cache_write: n("cache_creation_input_tokens"),
                cache_read: n("cache_read_input_tokens"),
                web_search: n("web_search_requests"),
                cost: v["cost_usd"].as_f64().unwrap(),
            }
        }

        fn merge(&mut self, other: &Sums) {
            self.requests += other.requests;
            self.errors += other.errors;
            self.streamed += other.streamed;
            self.input += other.input;
            self.output += other.output;
            self.cache_write += other.cache_write;
            self.cache_read += other.cache_read;
            self.web_search += other.web_search;
            self.cost += other.cost;
        }

        fn assert_eq(&self, want: &Sums, what: &str) {
            let strip = |s: &Sums| Sums {
                cost: 0.0,
                ..s.clone()
            };
            assert_eq!(strip(self), strip(want), "{what}");
            assert!(
                (self.cost - want.cost).abs() < 1e-6,
                "{what}: cost {} != {}",
                self.cost,
                want.cost
            );
        }

        /// The six number cells of a table line: tokens and cost as the table prints them.
        fn cells(&self) -> Vec<String> {
            let total = self.input + self.output + self.cache_write + self.cache_read;
            [
                self.input,
                self.output,
                self.cache_write,
                self.cache_read,
                total,
            ]
            .iter()
            .map(|n| thousands(*n))
            .chain([usd(self.cost)])
            .collect()
        }
    }

    fn thousands(n: u64) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    }

    fn usd(x: f64) -> String {
        let ten_thousandths = (x * 10_000.0).round() as u64;
        format!(
            "${}.{:04}",
            thousands(ten_thousandths / 10_000),
            ten_thousandths % 10_000
        )
    }

    fn utc(ms: i64) -> jiff::Zoned {
        Timestamp::from_millisecond(ms)
            .unwrap()
            .to_zoned(TimeZone::UTC)
    }

    /// The 5-hour blocks: a block starts at the hour of the first request after the previous
    /// block and holds every 15-minute bucket that begins within its five hours.
    fn block_of(rows: &[StoreRow]) -> BTreeMap<i64, i64> {
        const QUARTER: i64 = 15 * 60_000;
        const HOUR: i64 = 60 * 60_000;
        let mut starts = BTreeMap::new();
        let mut current: Option<i64> = None;
        let mut quarters: Vec<i64> = rows
            .iter()
            .map(|r| r.finished_ms.div_euclid(QUARTER) * QUARTER)
            .collect();
        quarters.sort_unstable();
        quarters.dedup();
        for q in quarters {
            let start = match current {
                Some(start) if q < start + 5 * HOUR => start,
                _ => q - q.rem_euclid(HOUR),
            };
            current = Some(start);
            starts.insert(q, start);
        }
        starts
    }

    /// (JSON key, table label) of `row` for a report kind.
    fn key(kind: &str, row: &StoreRow, blocks: &BTreeMap<i64, i64>) -> (Value, String) {
        let text = |s: &str| {
            if s.is_empty() {
                (Value::Null, "(none)".to_string())
            } else {
                (Value::from(s), s.to_string())
            }
        };
        let date = utc(row.finished_ms).date();
        let period = |s: String| (Value::from(s.clone()), s);
        match kind {
            "daily" => period(date.to_string()),
            "weekly" => {
                let back = i64::from(date.weekday().to_monday_zero_offset());
                period(
                    date.checked_sub(jiff::Span::new().days(back))
                        .unwrap()
                        .to_string(),
                )
            }
            "monthly" => period(date.strftime("%Y-%m").to_string()),
            "blocks" => {
                let start = blocks[&(row.finished_ms.div_euclid(900_000) * 900_000)];
                let z = utc(start);
                (
                    Value::from(z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()),
                    z.strftime("%Y-%m-%d %H:%M").to_string(),
                )
            }
            "sessions" => text(&row.session),
            "callers" => text(&row.caller),
            "models" => text(&row.model),
            "projects" => text(&row.project),
            "providers" => text(&row.provider),
            "clients" => text(&row.client),
            _ => unreachable!(),
        }
    }

    fn sluice_report(db: &Path, kind: &str, json: bool) -> String {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["report", kind, "--db"])
            .arg(db)
            .env("TZ", "UTC");
        if json {
            command.arg("--json");
        }
        let out = command.output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{kind}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn table_lines(text: &str) -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| l.starts_with('│'))
            .map(|l| {
                l.split(['│', '┆'])
                    .map(|c| c.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .map(|cells| cells[1..cells.len() - 1].to_vec())
            .collect()
    }

    #[test]
    fn report_db_every_kind_equals_the_known_sums() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sluice.db");
        let rows: Vec<StoreRow> = known_requests(SystemTime::now(), 11)
            .iter()
            .map(|f| row_of(f, "test"))
            .collect();
        let mut options = StoreOptions::new(Target::Sqlite(db.clone()));
        options.commit_interval = Duration::from_millis(20);
        let handle = store::open(options).unwrap();
        handle.submit(rows.clone());
        handle.close().unwrap();
        assert_eq!(handle.status().rows_written, rows.len() as u64);

        let blocks = block_of(&rows);
        let mut all = Sums::default();
        rows.iter().for_each(|r| all.add(r));
        assert!(
            all.errors > 0 && all.web_search > 0 && all.cache_write > 0,
            "{all:?}"
        );

        for kind in [
            "daily",
            "weekly",
            "monthly",
            "blocks",
            "sessions",
            "callers",
            "models",
            "projects",
            "providers",
            "clients",
        ] {
            let mut want: BTreeMap<String, (Value, Sums)> = BTreeMap::new();
            for row in &rows {
                let (json_key, label) = key(kind, row, &blocks);
                want.entry(label)
                    .or_insert_with(|| (json_key, Sums::default()))
                    .1
                    .add(row);
            }

            let doc: Value = serde_json::from_str(&sluice_report(&db, kind, true)).unwrap();
            let first = doc["group_by"][0].as_str().unwrap().to_string();
            let mut got: BTreeMap<String, Sums> = BTreeMap::new();
            for row in doc["rows"].as_array().unwrap() {
                let (label, _) = want
                    .iter()
                    .find(|(_, (k, _))| *k == row[&first])
                    .unwrap_or_else(|| panic!("{kind}: unknown key {}", row[&first]));
                got.entry(label.clone())
                    .or_default()
                    .merge(&Sums::of_json(row));
            }
            assert_eq!(got.len(), want.len(), "{kind}: groups");
            for (label, (_, sums)) in &want {
                got[label].assert_eq(sums, &format!("{kind} --json {label}"));
            }
            Sums::of_json(&doc["totals"]).assert_eq(&all, &format!("{kind} --json totals"));

            let text = sluice_report(&db, kind, false);
            let lines = table_lines(&text);
            for (label, (_, sums)) in want
                .iter()
                .chain([(&"Total".to_string(), &(Value::Null, all.clone()))])
            {
                let line = lines
                    .iter()
                    .find(|cells| cells[0] == *label)
                    .unwrap_or_else(|| panic!("{kind}: no line for {label} in\n{text}"));
                assert_eq!(
                    line[line.len() - 6..],
                    sums.cells()[..],
                    "{kind} table line {label}\n{text}"
                );
            }
            assert_eq!(
                lines
                    .iter()
                    .filter(|c| !c[0].is_empty() && !c[0].starts_with("active, "))
                    .count(),
                want.len() + 2,
                "{kind}: header, one line per group and the total\n{text}"
            );
        }
    }
}
