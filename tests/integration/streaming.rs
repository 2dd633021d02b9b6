//! Answers stream through chunk by chunk: no waiting for the next event, no buffering.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::support::*;

fn sse_events() -> Vec<String> {
    fixture("stream-text.sse")
        .split_inclusive("\n\n")
        .map(str::to_string)
        .collect()
}

#[actix_rt::test]
async fn sse_events_reach_client_before_the_next_is_sent() {
    let mock = MockUpstream::start();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    let events = sse_events();
    let gate = Gate::new();
    mock.always(Reply::GatedEvents(events.clone(), gate.clone()));

    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body(r#"{"stream":true}"#)
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut received = Vec::new();
    for (n, event) in events.iter().enumerate() {
        // Read until event n is complete; the mock will not send n+1 before we release it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while received.len() < events[..=n].concat().len() {
            let chunk = tokio::time::timeout_at(deadline.into(), response.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "event {n} did not arrive while the mock held event {}",
                        n + 1
                    )
                })
                .expect("stream still open")
                .unwrap();
            received.extend_from_slice(&chunk);
        }
        assert_eq!(gate.sent(), n + 1, "the mock had sent only up to event {n}");
        assert!(received.ends_with(event.as_bytes()));
        gate.release();
    }
    assert!(response.next().await.is_none());
    assert_eq!(received, events.concat().as_bytes());
}

#[actix_rt::test]
async fn five_megabyte_answer_passes_intact_with_flat_memory() {
    let mock = MockUpstream::start();
    let sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    // 5 MB in 80 chunks of 64 KiB, each with a pause, so sluice would have to hold it to buffer.
    let chunks: Vec<(Duration, bytes::Bytes)> = (0..80u32)
        .map(|i| {
            let byte = b'a' + (i % 26) as u8;
            (
                Duration::from_millis(5),
                bytes::Bytes::from(vec![byte; 65_536]),
            )
        })
        .collect();
    let expected: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    mock.always(Reply::Chunks(
        200,
        vec![("content-type".into(), "application/octet-stream".into())],
        chunks,
    ));

    // Warm up so that one-time allocations are not counted.
    client()
        .get(sluice.url("/anthropic/warmup"))
        .send()
        .await
        .unwrap()
        .body()
        .limit(10_000_000)
        .await
        .unwrap();
    let before = sluice.memory_kb("VmHWM");
    let mut response = client()
        .get(sluice.url("/anthropic/v1/big"))
        .send()
        .await
        .unwrap();
    let mut hasher = Sha256::new();
    let mut total = 0;
    while let Some(chunk) = response.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len();
        hasher.update(&chunk);
    }
    let after = sluice.memory_kb("VmHWM");
    assert_eq!(total, expected.len());
    assert_eq!(
        hasher.finalize().as_slice(),
        Sha256::digest(&expected).as_slice()
    );
    assert!(
        after - before < 2_048,
        "peak RSS grew by {} kB while 5 MB passed",
        after - before
    );
}
