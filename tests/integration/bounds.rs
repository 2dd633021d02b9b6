//! Bounds on what clients can grow: requests that each bring a new model name, credential and
//! session id grow sluice's memory, `/stats` and `/metrics` by a bounded amount only.

use std::time::{Duration, Instant};

use crate::support::*;

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Sends requests `from..to`, each with a model, credential and session never seen before, 16
/// at a time. The mock answers 404, so the model counted is the request's.
async fn send_hostile(sluice: &Sluice, from: usize, to: usize) {
    const CONCURRENCY: usize = 16;
    let client = client();
    let tasks = (0..CONCURRENCY).map(|lane| {
        let client = client.clone();
        let url = sluice.url("/anthropic/v1/messages");
        async move {
            for i in (from + lane..to).step_by(CONCURRENCY) {
                let body = format!(
                    r#"{{"model":"hostile-model-{i}","max_tokens":1,"messages":[{{"role":"user","content":"hi"}}]}}"#
                );
                let mut response = client
                    .post(&url)
                    .insert_header(("content-type", "application/json"))
                    .insert_header(("x-api-key", format!("sk-ant-api03-hostile-{i}")))
                    .insert_header(("x-claude-code-session-id", format!("session-{i}")))
                    .send_body(body)
                    .await
                    .unwrap();
                assert_eq!(response.status(), 404);
                response.body().await.unwrap();
            }
        }
    });
    futures_util::future::join_all(tasks).await;
}

async fn get_admin(sluice: &Sluice, path: &str) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut response = client()
        .get(sluice.url(path))
        .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .send()
        .await
        .unwrap();
    let body = response.body().limit(64 << 20).await.unwrap().to_vec();
    assert_eq!(response.status(), 200, "{path}");
    (start.elapsed(), body)
}

async fn hostile_requests_stay_bounded(n: usize) {
    const WARM_UP: usize = 200;
    let mock = MockUpstream::start();
    mock.always(Reply::json(
        404,
        r#"{"type":"error","error":{"type":"not_found_error","message":"model: no such model"}}"#,
    ));
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .env("TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .start();
    let pid = sluice.child.id();
    send_hostile(&sluice, 0, WARM_UP).await;
    get_admin(&sluice, "/stats").await;
    get_admin(&sluice, "/metrics").await;
    let before = rss_kib(pid);
    let started = Instant::now();
    send_hostile(&sluice, WARM_UP, WARM_UP + n).await;
    let sending = started.elapsed();
    let sent_rss = rss_kib(pid);
    // A fast client can run ahead of the store's writer (every hostile row brings new keys to
    // every rollup); rows past the queue's memory bound are dropped and counted, never lost
    // silently. Wait until the writer has caught up.
    let caught_up = || async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, first) = get_admin(&sluice, "/stats").await;
            let stats: serde_json::Value = serde_json::from_slice(&first).unwrap();
            if stats["store"]["pending"] == 0 || Instant::now() > deadline {
                break stats;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    caught_up().await;
    // One more, alone: the newest of all.
    send_hostile(&sluice, WARM_UP + n, WARM_UP + n + 1).await;
    let n = n + 1;
    let stats = caught_up().await;
    let dropped = stats["store"]["dropped"].as_u64().unwrap();
    assert_eq!(
        stats["totals"]["requests"].as_u64().unwrap() + dropped,
        (WARM_UP + n) as u64
    );
    let mut timings = Vec::new();
    let mut size = 0;
    for path in ["/stats", "/stats?since=1h", "/stats?since=5m", "/stats"] {
        let (took, body) = get_admin(&sluice, path).await;
        timings.push((path, took));
        size = size.max(body.len());
    }
    let (_, metrics) = get_admin(&sluice, "/metrics").await;
    let after = rss_kib(pid);
    let growth_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "hostile requests: {n} sent in {sending:?}, {dropped} store rows dropped; RSS {before} KiB -> {sent_rss} KiB after sending -> {after} KiB after /stats (+{growth_mib:.1} MiB); \
         /stats {size} bytes, {timings:?}; /metrics {} bytes",
        metrics.len()
    );
    // Each group holds a bounded number of keys, and says how many requests it left out.
    let limit = |group: &str, most: usize| {
        let len = stats[group].as_object().unwrap().len();
        assert!(len <= most, "{group}: {len} keys");
    };
    limit("by_model", 200 + 1);
    limit("by_credential", 1000);
    limit("by_session", 1000);
    limit("rate_limits", 1000);
    limit("unpriced_models", 200 + 1);
    let total = (WARM_UP + n) as u64 - dropped;
    let kept = |group: &str| -> u64 {
        stats[group]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c["requests"].as_u64().unwrap())
            .sum()
    };
    for group in ["by_model", "by_credential", "by_session"] {
        let folded = stats["folded"][group].as_u64().unwrap();
        if group == "by_model" {
            assert_eq!(kept(group), total, "by_model counts the rest under other");
            assert_eq!(
                folded,
                stats["by_model"]["other"]["requests"].as_u64().unwrap()
            );
        } else {
            assert_eq!(kept(group) + folded, total, "{group}");
        }
    }
    // The newest session and credential are never the ones left out.
    let newest = format!("session-{}", WARM_UP + n - 1);
    assert!(
        stats["by_session"].get(&newest).is_some(),
        "{newest} was evicted"
    );
    assert_eq!(stats["by_credential"].as_object().unwrap().len(), 1000);
    let metrics = String::from_utf8(metrics).unwrap();
    let labelled: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_requests_total{"))
        .filter_map(|l| l.split("model=\"").nth(1)?.split('"').next())
        .collect();
    assert!(labelled.len() <= 50 + 1, "{} model labels", labelled.len());
    assert!(labelled.contains("other"));
    assert!(size < 1 << 20, "/stats is {size} bytes");
    assert!(
        metrics.len() < 1 << 20,
        "/metrics is {} bytes",
        metrics.len()
    );
    assert!(
        growth_mib <= 30.0,
        "RSS grew {growth_mib:.1} MiB over {n} hostile requests"
    );
    let peak_mib = sent_rss.saturating_sub(before) as f64 / 1024.0;
    assert!(
        peak_mib <= 30.0,
        "RSS grew {peak_mib:.1} MiB while {n} hostile requests were sent"
    );
}

#[actix_rt::test]
async fn hostile_requests_stay_bounded_small() {
    hostile_requests_stay_bounded(5_000).await;
}

/// The full measure: 100,000 requests (minutes in a debug build; CI runs it).
#[actix_rt::test]
#[ignore]
async fn hostile_requests_stay_bounded_100k() {
    hostile_requests_stay_bounded(100_000).await;
}
