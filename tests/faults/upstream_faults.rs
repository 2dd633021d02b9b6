//! A misbehaving upstream: every way it can fail reaches the client as an Anthropic-shaped error
//! or an early end of stream, is counted with its outcome, and leaves sluice serving.

use std::time::{Duration, Instant};

use crate::fake::*;
use crate::support::*;
use crate::*;

fn exchange_then(steps: Vec<Step>) -> Script {
    let mut script = vec![Step::ReadHead, Step::ReadBody];
    script.extend(steps);
    script
}

#[actix_rt::test]
async fn upstream_that_never_answers_is_504_and_its_connection_is_closed() {
    let fake = FakeUpstream::start(exchange_then(vec![Step::Hold]));
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy)
        .toml("[timeouts]\nfirst_byte_ms = 500")
        .start();
    let start = Instant::now();
    let answer = answer(sluice.addr, &post("/anthropic/v1/messages", ""));
    let waited = start.elapsed();
    assert_sluice_error(&answer, 504, "upstream_timeout");
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(fake.accepted(), 1);
    assert!(fake.conns()[0].head.is_some(), "the request went upstream");
    assert!(
        fake.wait_peer_closed(0, Duration::from_secs(1)).is_some(),
        "the abandoned upstream connection must be closed"
    );
    assert_outcome(&sluice, "upstream_timeout");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["totals"]["errors"], 1);
    assert_eq!(stats["by_status"]["504"], 1);
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn headers_then_silence_ends_the_stream_after_idle_timeout() {
    let head_and_start = sse_started();
    let fake = FakeUpstream::start(exchange_then(vec![Step::Write(head_and_start), Step::Hold]));
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy)
        .toml("[timeouts]\nidle_ms = 500")
        .start();
    let start = Instant::now();
    let raw = exchange(
        sluice.addr,
        &post("/anthropic/v1/messages", ""),
        Duration::from_secs(10),
    );
    let waited = start.elapsed();
    let answer = RawAnswer::parse(&raw).expect("a response head");
    assert_eq!(answer.status, 200);
    assert!(answer.raw.contains("message_start"), "{}", answer.raw);
    assert!(
        !answer.raw.ends_with("0\r\n\r\n"),
        "the stream must not look complete: {}",
        answer.raw
    );
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(fake.wait_peer_closed(0, Duration::from_secs(1)).is_some());
    assert_outcome(&sluice, "idle_timeout");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["totals"]["incomplete"], 1);
    assert_eq!(stats["totals"]["streamed"], 1);
    assert_eq!(stats["totals"]["input_tokens"], 25, "tokens so far count");
    assert_eq!(stats["by_status"]["200"], 1);
    assert_still_serving(&sluice);
}

/// The upstream drops the connection part-way through `cut` (a chunked or sized body): the
/// client must see the answer end early (no terminating chunk, or fewer bytes than announced),
/// and the request must count as incomplete with outcome `upstream_cut`.
async fn assert_cut_is_visible_and_counted(cut: Vec<u8>, last_bytes: &str) {
    let fake = FakeUpstream::start(exchange_then(vec![Step::Write(cut), Step::Close]));
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let raw = exchange(
        sluice.addr,
        &post("/anthropic/v1/messages", ""),
        Duration::from_secs(10),
    );
    // (A connection closed before even the head was flushed also shows the cut.)
    if let Some(answer) = RawAnswer::parse(&raw) {
        assert_eq!(answer.status, 200);
        match answer.header("content-length") {
            Some(length) => assert!(
                answer.body.len() < length.parse::<usize>().unwrap(),
                "the client must see fewer bytes than announced: {}",
                answer.raw
            ),
            None => {
                assert!(answer.raw.contains(last_bytes), "bytes so far arrive");
                assert!(
                    !answer.raw.ends_with("0\r\n\r\n"),
                    "the client must not get a terminating chunk for a cut stream: {}",
                    answer.raw
                )
            }
        }
    }
    assert_outcome(&sluice, "upstream_cut");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["totals"]["incomplete"], 1);
    assert_eq!(stats["totals"]["input_tokens"], 25, "tokens so far count");
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn chunked_stream_cut_mid_event_is_visible_to_the_client_and_counted_upstream_cut() {
    let mut cut = sse_started();
    // Half an event, then the connection drops without the last chunk.
    cut.extend(chunk(
        b"event: content_block_delta\ndata: {\"type\":\"content_bl",
    ));
    assert_cut_is_visible_and_counted(cut, "\"content_bl").await;
}

#[actix_rt::test]
async fn sized_stream_cut_mid_event_is_visible_to_the_client_and_counted_upstream_cut() {
    let body = format!("{SSE_START}event: content_block_delta\ndata: {{\"type\":\"content_bl");
    let mut cut = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
        body.len() + 500
    )
    .into_bytes();
    cut.extend(body.into_bytes());
    assert_cut_is_visible_and_counted(cut, "\"content_bl").await;
}

#[actix_rt::test]
async fn response_head_dripping_a_byte_a_second_still_times_out_at_first_byte_ms() {
    let fake = FakeUpstream::start(exchange_then(vec![Step::Drip(
        json_answer(200, MESSAGE),
        Duration::from_secs(1),
    )]));
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy)
        .toml("[timeouts]\nfirst_byte_ms = 1500")
        .start();
    let start = Instant::now();
    let answer = answer(sluice.addr, &post("/anthropic/v1/messages", ""));
    assert_sluice_error(&answer, 504, "upstream_timeout");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "bytes trickling in must not extend it"
    );
    assert!(fake.wait_peer_closed(0, Duration::from_secs(2)).is_some());
    assert_outcome(&sluice, "upstream_timeout");
    counted(&sluice, 1).await;
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn body_dripping_a_byte_a_second_is_forwarded_byte_by_byte_and_completes() {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\n";
    let fake = FakeUpstream::start(exchange_then(vec![
        Step::Write(head.to_vec()),
        Step::Drip(b"abc".to_vec(), Duration::from_secs(1)),
        Step::Close,
    ]));
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy)
        .toml("[timeouts]\nidle_ms = 1800")
        .start();
    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let start = Instant::now();
    let mut received = Vec::new();
    let mut first_byte_after = None;
    while let Some(chunk) = futures_util::StreamExt::next(&mut response).await {
        received.extend_from_slice(&chunk.unwrap());
        first_byte_after.get_or_insert(start.elapsed());
    }
    assert_eq!(received, b"abc");
    assert!(
        first_byte_after.unwrap() < Duration::from_millis(1800),
        "the first byte must not wait for the others: {first_byte_after:?}"
    );
    assert_outcome(&sluice, "completed");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["totals"]["incomplete"], 0);
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn garbage_instead_of_http_is_502_upstream_broken() {
    for garbage in [
        b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe not http at all\r\n\r\n".to_vec(),
        b"HTTP/1.1 two hundred OK\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nx-bad: a\x00b\r\ncontent-length: 0\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nhello".to_vec(),
    ] {
        let fake = FakeUpstream::start(exchange_then(vec![
            Step::Write(garbage.clone()),
            Step::Close,
        ]));
        let healthy = MockUpstream::start();
        let sluice = sluice_before(&fake.url(), &healthy).start();
        let answer = answer(sluice.addr, &post("/anthropic/v1/messages", ""));
        let what = String::from_utf8_lossy(&garbage);
        assert_eq!(answer.status, 502, "{what:?}: {}", answer.raw);
        assert_sluice_error(&answer, 502, "upstream_broken");
        assert_outcome(&sluice, "upstream_broken");
        let stats = counted(&sluice, 1).await;
        assert_eq!(stats["by_status"]["502"], 1);
        assert_still_serving(&sluice);
    }
}

#[actix_rt::test]
async fn hundred_kilobytes_of_response_headers_is_502() {
    let mut head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n".to_vec();
    for i in 0..1000 {
        head.extend(format!("x-filler-{i:04}: {}\r\n", "f".repeat(84)).into_bytes());
    }
    head.extend(b"content-length: 2\r\nconnection: close\r\n\r\n{}");
    assert!(head.len() > 100_000);
    let fake = FakeUpstream::start(exchange_then(vec![Step::Write(head), Step::Close]));
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let answer = answer(sluice.addr, &post("/anthropic/v1/messages", ""));
    assert_sluice_error(&answer, 502, "upstream_broken");
    assert_outcome(&sluice, "upstream_broken");
    counted(&sluice, 1).await;
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn one_hundred_kilobyte_response_header_passes_through_as_it_is() {
    // Under actix-http's client limits (96 headers, 128 KiB head) a large header is an
    // end-to-end header like any other: forwarded untouched.
    let huge = "h".repeat(100_000);
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-huge: {huge}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    let fake = FakeUpstream::start(exchange_then(vec![
        Step::Write(head.into_bytes()),
        Step::Close,
    ]));
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let answer = answer(sluice.addr, &post("/anthropic/v1/messages", ""));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-huge").as_deref(), Some(huge.as_str()));
    assert_eq!(answer.body, b"{}");
    assert_outcome(&sluice, "completed");
    counted(&sluice, 1).await;
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn upstream_closing_right_after_accept_is_502() {
    let fake = FakeUpstream::start(vec![Step::Close]);
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let answer = answer(sluice.addr, &post("/anthropic/v1/messages", ""));
    assert_eq!(answer.status, 502, "{}", answer.raw);
    let kind = answer.header("x-sluice-error").unwrap();
    assert_sluice_error(&answer, 502, &kind);
    assert!(
        ["upstream_broken", "upstream_unreachable"].contains(&kind.as_str()),
        "{kind}"
    );
    assert_outcome(&sluice, &kind);
    counted(&sluice, 1).await;
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn early_answer_before_the_body_is_read_passes_through() {
    // The upstream refuses on the head alone, then drains the body (as RFC 9110 servers may).
    let refusal =
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"too big"}}"#;
    let fake = FakeUpstream::start(vec![
        Step::ReadHead,
        Step::Write(json_answer(400, refusal)),
        Step::ReadBody,
        Step::Close,
    ]);
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let body = vec![b'x'; 256 * 1024];
    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("x-sluice-error").is_none());
    assert_eq!(response.body().await.unwrap(), refusal.as_bytes());
    assert_outcome(&sluice, "completed");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["by_status"]["400"], 1);
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn early_answer_then_close_without_reading_the_body() {
    // The upstream answers on the head and closes with most of a 4 MB body unread: the
    // connection is reset under sluice's writes. The client gets the upstream's answer or a 502,
    // never a hang, and the request is counted.
    let refusal = r#"{"type":"error","error":{"type":"invalid_request_error","message":"no"}}"#;
    let fake = FakeUpstream::start(vec![
        Step::ReadHead,
        Step::Write(json_answer(400, refusal)),
        Step::Close,
    ]);
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let start = Instant::now();
    let response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("content-type", "application/json"))
        .send_body(vec![b'x'; 4 << 20])
        .await;
    assert!(start.elapsed() < Duration::from_secs(5));
    let status = match response {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let _ = response.body().limit(1 << 20).await;
            status
        }
        // sluice may answer and close before the client finished sending its body.
        Err(err) => panic!("no answer reached the client: {err}"),
    };
    assert!(status == 400 || status == 502, "{status}");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["by_status"][status.to_string()], 1);
    assert_still_serving(&sluice);
}
