//! Crash safety: `kill -9` under load leaves the state file intact (atomic writes), and a restart
//! starts from the last flush.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::*;
use crate::*;

/// Clients sending requests back to back until stopped (errors, e.g. after the kill, end them).
fn load(
    sluice: &Sluice,
    clients: usize,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (addr, stop, sent) = (sluice.addr, stop.clone(), sent.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let raw = exchange(
                        addr,
                        &post("/anthropic/v1/messages", ""),
                        Duration::from_secs(2),
                    );
                    if raw.is_empty() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// The state file as written: it must always be complete JSON of a known version.
fn read_state(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("state file exists");
    let state: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("state file torn ({e}): {text}"));
    assert_eq!(state["version"], 1);
    state
}

/// `value` with every `cost_usd` rounded as `/stats` shows it (to 1e-9 USD).
fn rounded_costs(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let v = match (k.as_str(), v.as_f64()) {
                    ("cost_usd", Some(cost)) => serde_json::json!((cost * 1e9).round() / 1e9),
                    _ => rounded_costs(v),
                };
                (k.clone(), v)
            })
            .collect(),
        other => other.clone(),
    }
}

fn persisted_requests(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|s| s["book"]["lifetime"]["totals"]["requests"].as_u64())
        .unwrap_or(0)
}

#[actix_rt::test]
async fn kill_9_under_load_keeps_the_last_flush_and_an_intact_state_file() {
    let mock = MockUpstream::start();
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state/stats.json");
    let builder = sluice()
        .route("/anthropic", &mock.url(), &[])
        .state_file(&state_file);
    let mut last_flushed: Option<serde_json::Value> = None;
    for round in 0..3 {
        let mut sluice = builder.clone().start();
        let stats = stats(&sluice, "", None).await;
        match &last_flushed {
            None => assert_eq!(stats["totals"]["requests"], 0),
            Some(flushed) => {
                // Everything in the last flush is back, group by group.
                for group in ["totals", "by_route", "by_model", "by_source", "by_status"] {
                    assert_eq!(
                        stats[group],
                        rounded_costs(&flushed[group]),
                        "round {round}: {group} after restart"
                    );
                }
            }
        }
        let before = stats["totals"]["requests"].as_u64().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let clients = load(&sluice, 8, &stop, &sent);
        // Load until a flush during it has landed, then kill mid-load.
        let deadline = Instant::now() + Duration::from_secs(6);
        while persisted_requests(&state_file) <= before {
            assert!(Instant::now() < deadline, "no flush under load");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100 + 250 * round as u64));
        sluice.child.kill().unwrap();
        sluice.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        assert!(sent.load(Ordering::Relaxed) > 0);
        let file = read_state(&state_file);
        let lifetime = &file["book"]["lifetime"];
        assert!(lifetime["totals"]["requests"].as_u64().unwrap() > before);
        last_flushed = Some(lifetime.clone());
        let logs = sluice.logs();
        assert!(!logs.contains("panicked"), "{logs}");
    }
    // Nothing was moved aside as unreadable.
    let names: Vec<String> = std::fs::read_dir(state_file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains("unreadable")), "{names:?}");
    let sluice = builder.start();
    let stats = stats(&sluice, "", None).await;
    assert_eq!(
        stats["totals"],
        rounded_costs(&last_flushed.unwrap()["totals"]),
        "the last flush is where counting resumes"
    );
}
