//! Graceful shutdown: the first SIGTERM stops new connections and lets streams finish (up to
//! `shutdown_grace_s`, 5 s in tests), what was counted is in the store, exit 0; a second SIGTERM stops at once.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::fake::*;
use crate::support::*;
use crate::*;

/// Waits until connecting to `sluice` is refused.
fn wait_refusing(sluice: &Sluice, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(sluice.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The totals the store file holds, read as `sluice report --db` reads it.
fn persisted_totals(path: &Path) -> serde_json::Value {
    let query = sluice::store::UsageQuery::parse("").unwrap();
    let report = sluice::store::usage_from_file(path, &query, std::time::SystemTime::now())
        .expect("store written");
    serde_json::to_value(report.totals).unwrap()
}

#[test]
fn sigterm_during_a_stream_refuses_new_connections_finishes_the_stream_and_flushes() {
    let mock = MockUpstream::start();
    let gate = Gate::new();
    let events: Vec<String> = fixture("stream-text.sse")
        .split_inclusive("\n\n")
        .map(str::to_string)
        .collect();
    mock.always(Reply::GatedEvents(events.clone(), gate.clone()));
    let state = tempfile::tempdir().unwrap();
    let store_file = state.path().join("sluice.db");
    let mut sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml(&format!("[store]\npath = \"{}\"", store_file.display()))
        .start();
    let (mut stream, mut seen) = stream_started(&sluice, "message_start");

    sluice.signal("TERM");
    wait_refusing(&sluice, Duration::from_secs(2));
    assert!(
        sluice.child.try_wait().unwrap().is_none(),
        "exited with a stream in flight"
    );
    // The rest of the stream still flows, event by event.
    for _ in 1..events.len() {
        gate.release();
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(err) => panic!("stream broken during shutdown: {err}"),
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("message_stop"), "{seen}");
    assert!(seen.ends_with("0\r\n\r\n"), "the stream completed: {seen}");
    assert_eq!(sluice.wait_exit(Duration::from_secs(10)), Some(0));
    let totals = persisted_totals(&store_file);
    assert_eq!(totals["requests"], 1, "{totals}");
    assert_eq!(totals["streamed"], 1);
    assert_eq!(totals["incomplete"], 0);
    assert!(totals["output_tokens"].as_u64().unwrap() > 0);
    let logs = sluice.logs();
    assert!(logs.contains("outcome=completed"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

/// A stream that never ends, for the stop-at-once cases.
fn endless_stream() -> FakeUpstream {
    let head_and_start = sse_started();
    FakeUpstream::start(vec![
        Step::ReadHead,
        Step::ReadBody,
        Step::Write(head_and_start),
        Step::Hold,
    ])
}

#[test]
fn second_sigterm_stops_at_once_and_still_flushes() {
    let fake = endless_stream();
    let state = tempfile::tempdir().unwrap();
    let store_file = state.path().join("sluice.db");
    let mut sluice = sluice()
        .route("/anthropic", &fake.url(), &[])
        .toml(&format!("[store]\npath = \"{}\"", store_file.display()))
        .start();
    let (_stream, _) = stream_started(&sluice, "message_start");
    sluice.signal("TERM");
    wait_refusing(&sluice, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sluice.child.try_wait().unwrap().is_none(),
        "waits for the stream"
    );
    let second = Instant::now();
    sluice.signal("TERM");
    let code = sluice.wait_exit(Duration::from_secs(8));
    let took = second.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(code, Some(0));
    // The cut stream is counted as incomplete.
    let totals = persisted_totals(&store_file);
    assert_eq!(totals["requests"], 1, "{totals}");
    assert_eq!(totals["incomplete"], 1, "{totals}");
}

/// Starts an endless stream, sends one SIGTERM and waits for the exit: (exit code, how long).
fn stop_after_grace(sluice: &mut Sluice) -> (Option<i32>, Duration, Vec<u8>) {
    let (mut stream, _) = stream_started(sluice, "message_start");
    let signalled = Instant::now();
    sluice.signal("TERM");
    let code = sluice.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    (code, took, rest)
}

#[test]
fn grace_period_ending_stops_the_stream_and_exits_0() {
    let fake = endless_stream();
    let mut sluice = sluice().route("/anthropic", &fake.url(), &[]).start();
    let (code, took, rest) = stop_after_grace(&mut sluice);
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(8),
        "shutdown_grace_s = 5, exited after {took:?}"
    );
    assert_eq!(code, Some(0));
    // The client sees its stream end early: no terminating chunk.
    assert!(!rest.ends_with(b"0\r\n\r\n"));
    assert!(fake.wait_peer_closed(0, Duration::from_secs(1)).is_some());
}

#[test]
fn stream_cut_by_the_grace_period_is_in_the_store() {
    let fake = endless_stream();
    let state = tempfile::tempdir().unwrap();
    let store_file = state.path().join("sluice.db");
    let mut sluice = sluice()
        .route("/anthropic", &fake.url(), &[])
        .toml(&format!("[store]\npath = \"{}\"", store_file.display()))
        .start();
    let (code, _, _) = stop_after_grace(&mut sluice);
    assert_eq!(code, Some(0));
    let totals = persisted_totals(&store_file);
    assert_eq!(totals["requests"], 1, "{totals}");
    assert_eq!(totals["incomplete"], 1, "{totals}");
}

#[test]
fn a_request_waiting_for_the_upstream_at_a_second_sigterm_gets_a_plain_503() {
    let fake = FakeUpstream::start(vec![Step::ReadHead, Step::ReadBody, Step::Hold]);
    let mut sluice = sluice().route("/anthropic", &fake.url(), &[]).start();
    let addr = sluice.addr;
    let waiting = std::thread::spawn(move || {
        exchange(
            addr,
            &post("/anthropic/v1/messages", ""),
            Duration::from_secs(10),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.conns().first().and_then(|c| c.head.clone()).is_none() {
        assert!(Instant::now() < deadline, "the request never went upstream");
        std::thread::sleep(Duration::from_millis(10));
    }
    sluice.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    sluice.signal("TERM");
    sluice.wait_exit(Duration::from_secs(8));
    let raw = waiting.join().unwrap();
    let answer = RawAnswer::parse(&raw).expect("an answer before the exit");
    assert_sluice_error(&answer, 503, "shutting_down");
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains("sluice: sluice"), "{message}");
}
