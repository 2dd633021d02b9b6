//! The store behind a running sluice: every request a row, `/usage` read back from it, the
//! writer's state in `/stats`, and the start and exit refusing to lose rows silently.

use std::time::{Duration, Instant};

use crate::support::*;

async fn get(sluice: &Sluice, path: &str) -> (u16, String, String) {
    let mut response = client().get(sluice.url(path)).send().await.unwrap();
    let kind = response
        .headers()
        .get("x-sluice-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.body().limit(16 << 20).await.unwrap();
    (
        response.status().as_u16(),
        kind,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

async fn send_message(sluice: &Sluice, session: &str) {
    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("x-api-key", "sk-ant-api03-client-key"))
        .insert_header(("x-claude-code-session-id", session))
        .send_body("{}")
        .await
        .unwrap();
    response.body().await.unwrap();
}

/// Polls `/usage` until it counts `n` requests.
async fn usage_after(sluice: &Sluice, query: &str, n: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = get(sluice, &format!("/usage?{query}")).await;
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        if body["totals"]["requests"].as_u64() >= Some(n) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn every_request_is_a_row_that_usage_reads_back() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let message: serde_json::Value = serde_json::from_str(&fixture("message.json")).unwrap();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    for session in ["s-1", "s-1", "s-2"] {
        send_message(&sluice, session).await;
    }
    let body = usage_after(&sluice, "group_by=session,model&tz=Europe/Berlin", 3).await;
    assert_eq!(body["totals"]["requests"], 3);
    assert_eq!(
        body["totals"]["input_tokens"],
        3 * message["usage"]["input_tokens"].as_u64().unwrap()
    );
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["session"], "s-1");
    assert_eq!(rows[0]["model"], message["model"]);
    assert_eq!(rows[0]["requests"], 2);

    let (status, _, csv) = get(&sluice, "/usage?group_by=day&format=csv").await;
    assert_eq!(status, 200);
    assert!(csv.starts_with("day,requests,errors,"), "{csv}");
    assert_eq!(csv.lines().count(), 2);

    let (status, kind, body) = get(&sluice, "/usage?group_by=fortnight").await;
    assert_eq!((status, kind.as_str()), (400, "bad_query"), "{body}");
    assert!(body.contains("fortnight"));

    let stats = stats(&sluice, "", None).await;
    assert_eq!(stats["store"]["backend"], "sqlite");
    assert_eq!(stats["store"]["rows_written"], 3);
    assert_eq!(stats["store"]["failures"], 0);
    assert!(sluice.dir.path().join("state/sluice.db").exists());

    let (status, _, metrics) = get(&sluice, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sluice_store_rows_written_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_store_failing 0"), "{metrics}");
    assert!(
        metrics.contains("# TYPE sluice_store_write_failures_total counter"),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn usage_needs_the_admin_token_and_answers_from_a_memory_store() {
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[store]\npath = \"\"")
        .env("TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .start();
    let (status, _, _) = get(&sluice, "/usage").await;
    assert_eq!(status, 401);
    let mut response = client()
        .get(sluice.url("/usage"))
        .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["totals"]["requests"], 0, "{body}");
    assert!(mock.received().is_empty(), "/usage is never forwarded");
    assert!(
        !sluice.dir.path().join("state").exists(),
        "a memory store writes no file"
    );
}

/// The benchmarks' baseline: the test hook runs sluice with no store at all (no sink, no file),
/// requests still pass, and what needs the store says it is unavailable.
#[actix_rt::test]
async fn the_without_store_hook_runs_sluice_with_no_store_at_all() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .env("SLUICE_TEST_WITHOUT_STORE", "1")
        .start();
    send_message(&sluice, "s-1").await;
    assert_eq!(mock.received().len(), 1);
    let (status, kind, body) = get(&sluice, "/usage").await;
    assert_eq!(
        (status, kind.as_str()),
        (503, "store_unavailable"),
        "{body}"
    );
    assert!(!sluice.dir.path().join("state").exists(), "no store file");
}

#[test]
fn a_store_file_that_is_not_a_database_stops_the_start_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sluice.db");
    std::fs::write(&db, b"not a database").unwrap();
    let settings = sluice()
        .route("/anthropic", "http://127.0.0.1:9", &[])
        .toml(&format!("[store]\npath = \"{}\"", db.display()))
        .settings_text();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, settings).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--settings")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not an SQLite database"), "{stderr}");
    assert_eq!(std::fs::read(&db).unwrap(), b"not a database");
}

#[actix_rt::test]
async fn a_relative_store_path_lives_under_the_state_directory() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let state = tempfile::tempdir().unwrap();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .env("STATE_DIRECTORY", state.path().to_str().unwrap())
        .start();
    send_message(&sluice, "s-1").await;
    usage_after(&sluice, "", 1).await;
    assert!(state.path().join("state/sluice.db").exists());
    assert!(!sluice.dir.path().join("state/sluice.db").exists());
}

#[actix_rt::test]
async fn a_final_write_that_fails_makes_the_exit_status_non_zero() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let mut sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    send_message(&sluice, "s-1").await;
    usage_after(&sluice, "", 1).await;
    // Another process holds the database's write lock until sluice has given up.
    let locker = rusqlite::Connection::open(sluice.dir.path().join("state/sluice.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    send_message(&sluice, "s-1").await;
    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(Duration::from_secs(30)), Some(1));
    assert!(
        sluice
            .logs()
            .contains("could not be written before shutdown"),
        "{}",
        sluice.logs()
    );
    locker.execute_batch("ROLLBACK").unwrap();
}

#[actix_rt::test]
async fn kill_9_under_load_loses_at_most_the_last_second() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let mut sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let started = Instant::now();
    let mut finished_at = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        send_message(&sluice, "s-1").await;
        finished_at.push(Instant::now());
    }
    let killed_at = Instant::now();
    sluice.signal("KILL");
    assert_eq!(
        sluice.wait_exit(Duration::from_secs(10)),
        None,
        "killed, no exit status"
    );
    let db = rusqlite::Connection::open(sluice.dir.path().join("state/sluice.db")).unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    let older_than_a_second = finished_at
        .iter()
        .filter(|t| killed_at.duration_since(**t) > Duration::from_secs(1))
        .count() as i64;
    assert!(older_than_a_second > 0);
    assert!(
        rows >= older_than_a_second && rows <= finished_at.len() as i64,
        "{rows} rows kept, {older_than_a_second} requests finished more than a second before the kill"
    );
}

/// Sends one request to `path` with `headers` (and the client key the routes forward).
async fn send_from(sluice: &Sluice, path: &str, headers: &[(&str, &str)]) {
    let mut request = client()
        .post(sluice.url(path))
        .insert_header(("content-type", "application/json"))
        .insert_header(("x-api-key", "sk-ant-api03-client-key"));
    for header in headers {
        request = request.insert_header(*header);
    }
    request.send_body("{}").await.unwrap().body().await.unwrap();
}

#[actix_rt::test]
async fn providers_and_clients_are_counted_grouped_and_filtered() {
    let mock = MockUpstream::start();
    mock.always(Reply::json(200, &fixture("message.json")));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .route("/plain", &mock.url(), &["protocol = \"none\""])
        .start();
    let claude_code = ("user-agent", "claude-cli/2.1.22 (external, cli)");
    send_from(&sluice, "/anthropic/v1/messages", &[claude_code]).await;
    send_from(&sluice, "/anthropic/v1/messages", &[claude_code]).await;
    send_from(
        &sluice,
        "/anthropic/v1/messages",
        &[("user-agent", "Anthropic/Python 0.71.0")],
    )
    .await;
    send_from(
        &sluice,
        "/plain/v1/anything",
        &[
            (
                "user-agent",
                "codex_exec/0.63.0 (Ubuntu 24.4.0; x86_64) unknown",
            ),
            ("originator", "codex_exec"),
        ],
    )
    .await;
    send_from(
        &sluice,
        "/plain/v1/anything",
        &[("user-agent", "curl/8.5.0")],
    )
    .await;

    let body = usage_after(&sluice, "group_by=provider,client", 5).await;
    let rows: Vec<(String, String, u64)> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["provider"].as_str().unwrap().to_string(),
                row["client"].as_str().unwrap().to_string(),
                row["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("anthropic", "anthropic-sdk-python", 1),
        ("anthropic", "claude-code", 2),
        ("none", "codex", 1),
        ("none", "curl", 1),
    ]
    .map(|(p, c, n)| (p.to_string(), c.to_string(), n));
    assert_eq!(rows, expected);

    let body = usage_after(&sluice, "group_by=day&client=claude-code", 2).await;
    assert_eq!(body["totals"]["requests"], 2);
    let body = usage_after(&sluice, "group_by=client&provider=none", 2).await;
    assert_eq!(body["totals"]["requests"], 2);
    assert_eq!(body["rows"].as_array().unwrap().len(), 2);
    let (status, kind, _) = get(&sluice, "/usage?group_by=agent_kind").await;
    assert_eq!((status, kind.as_str()), (400, "bad_query"));

    let stats = stats(&sluice, "", None).await;
    assert_eq!(stats["by_provider"]["anthropic"]["requests"], 3);
    assert_eq!(stats["by_provider"]["none"]["requests"], 2);
    assert_eq!(stats["by_client"]["claude-code"]["requests"], 2);
    assert_eq!(stats["by_client"]["codex"]["requests"], 1);
    assert_eq!(stats["by_client"].as_object().unwrap().len(), 4);
    assert_eq!(stats["totals"]["reasoning_output_tokens"], 0);
    assert_eq!(stats["totals"]["usage_missing"], 0);

    let (_, _, metrics) = get(&sluice, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_requests_total{")
                && l.contains("provider=\"none\"")
                && l.contains("route=\"/plain\"")),
        "{metrics}"
    );
    assert!(
        !metrics.contains("claude-code"),
        "no client label: {metrics}"
    );
    let logs = sluice.logs();
    assert!(
        logs.lines().any(|l| l.contains("request finished")
            && l.contains("provider=anthropic")
            && l.contains("client=claude-code")),
        "{logs}"
    );
}
