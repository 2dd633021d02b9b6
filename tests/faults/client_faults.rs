//! Misbehaving clients: requests that leave early, trickle in, smuggle, overflow or try to steer
//! sluice elsewhere. What sluice's handler refuses is counted in `/stats`; what actix-web's HTTP
//! parser refuses never reaches the handler, so it is answered by actix-web and not counted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::fake::*;
use crate::support::*;
use crate::*;

/// The upstream answers normally, and a test can see whether it was contacted at all.
fn contacted_upstream() -> FakeUpstream {
    FakeUpstream::start(answers_ok())
}

/// Asserts that actix-web refused `request` itself with `status` and closed the connection, that
/// the upstream never saw it, and that sluice still serves (and did not count it).
async fn assert_refused_by_http_layer(request: &[u8], status: u16) {
    let fake = contacted_upstream();
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let raw = exchange(sluice.addr, request, Duration::from_secs(10));
    let answer = RawAnswer::parse(&raw).unwrap_or_else(|| {
        panic!(
            "no answer to {:?}: {:?}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&raw)
        )
    });
    assert_eq!(
        answer.status,
        status,
        "{:?} → {}",
        String::from_utf8_lossy(request),
        answer.raw
    );
    assert_eq!(
        answer.answers(),
        1,
        "one answer, then the connection closes"
    );
    assert_eq!(fake.accepted(), 0, "the upstream was contacted");
    assert_still_serving(&sluice);
    // Only the still-serving request is counted.
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["totals"]["errors"], 0);
}

#[actix_rt::test]
async fn client_leaving_mid_stream_closes_the_upstream_within_a_second_and_counts_client_gone() {
    let head_and_start = sse_started();
    let fake = FakeUpstream::start(vec![
        Step::ReadHead,
        Step::ReadBody,
        Step::Write(head_and_start),
        Step::Hold,
    ]);
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let (stream, _) = stream_started(&sluice, "content_block_start");
    drop(stream);
    let left = Instant::now();
    let closed = fake
        .wait_peer_closed(0, Duration::from_secs(3))
        .expect("the upstream connection must be closed when the client leaves");
    assert!(
        closed.duration_since(left) < Duration::from_secs(1),
        "upstream closed {:?} after the client left",
        closed.duration_since(left)
    );
    assert_outcome(&sluice, "client_gone");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["totals"]["incomplete"], 1);
    assert_eq!(stats["totals"]["input_tokens"], 25, "tokens so far count");
    assert_still_serving(&sluice);
}

/// Sends `request` through sluice to an upstream that never answers, leaves as soon as the
/// upstream has the request head, and asserts the upstream connection closes within a second.
fn leave_once_upstream_has_it(request: &[u8]) -> (Sluice, FakeUpstream, MockUpstream) {
    let fake = FakeUpstream::start(vec![Step::ReadHead, Step::ReadBody, Step::Hold]);
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let mut stream = TcpStream::connect(sluice.addr).unwrap();
    stream.write_all(request).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.conns().first().and_then(|c| c.head.clone()).is_none() {
        assert!(Instant::now() < deadline, "the request never went upstream");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stream);
    let left = Instant::now();
    let closed = fake
        .wait_peer_closed(0, Duration::from_secs(3))
        .expect("the upstream request must be cancelled when the client leaves");
    assert!(
        closed.duration_since(left) < Duration::from_secs(1),
        "upstream closed {:?} after the client left",
        closed.duration_since(left)
    );
    (sluice, fake, healthy)
}

#[actix_rt::test]
async fn client_leaving_before_the_answer_cancels_the_upstream_within_a_second() {
    let (sluice, _fake, _healthy) = leave_once_upstream_has_it(&post("/anthropic/v1/messages", ""));
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn client_leaving_before_the_answer_is_counted_client_gone() {
    let (sluice, _fake, _healthy) = leave_once_upstream_has_it(&post("/anthropic/v1/messages", ""));
    assert_outcome(&sluice, "client_gone");
    counted(&sluice, 1).await;
}

#[actix_rt::test]
async fn client_leaving_mid_upload_cancels_the_upstream_request_and_is_counted() {
    let mut request =
        b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
            .to_vec();
    request.extend(vec![b'x'; 100_000]);
    let (sluice, _fake, _healthy) = leave_once_upstream_has_it(&request);
    // Counted as a body that could not be read (400 `client_body`).
    assert_outcome(&sluice, "client_body");
    counted(&sluice, 1).await;
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn slowloris_headers_get_408_from_actix_web_while_others_are_served() {
    let fake = contacted_upstream();
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    // 40 connections each trickling a request head, one byte per 200 ms per connection.
    let head = b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut slow: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(sluice.addr).unwrap())
        .collect();
    let start = Instant::now();
    let mut answers: Vec<Option<(Duration, Vec<u8>)>> = vec![None; slow.len()];
    let mut served_meanwhile = false;
    for byte in head.iter().cycle().take(60) {
        for (i, stream) in slow.iter_mut().enumerate() {
            if answers[i].is_none() && stream.write_all(&[*byte]).is_err() {
                answers[i] = Some((start.elapsed(), Vec::new()));
            }
        }
        if !served_meanwhile && start.elapsed() > Duration::from_secs(1) {
            let t = Instant::now();
            assert_still_serving(&sluice);
            assert!(t.elapsed() < Duration::from_millis(500), "others wait");
            served_meanwhile = true;
        }
        std::thread::sleep(Duration::from_millis(200));
        for (i, stream) in slow.iter_mut().enumerate() {
            if answers[i].is_some() {
                continue;
            }
            stream.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 1024];
            if let Ok(n) = stream.read(&mut buf) {
                answers[i] = Some((start.elapsed(), buf[..n].to_vec()));
            }
            stream.set_nonblocking(false).unwrap();
        }
        if answers.iter().all(Option::is_some) {
            break;
        }
    }
    assert!(served_meanwhile);
    for (i, answer) in answers.iter().enumerate() {
        let (when, bytes) = answer
            .as_ref()
            .unwrap_or_else(|| panic!("slow connection {i} still open after 12 s"));
        assert!(
            *when >= Duration::from_secs(4) && *when < Duration::from_secs(8),
            "{when:?}"
        );
        assert!(
            bytes.starts_with(b"HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_eq!(fake.accepted(), 0);
    // Not counted: actix-web answered before sluice's handler saw a request.
    counted(&sluice, 1).await;
}

#[actix_rt::test]
async fn content_length_with_transfer_encoding_is_refused_and_nothing_is_smuggled() {
    for framing in [
        "Content-Length: 48\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 48\r\n",
        "Content-Length: 48\r\nTransfer-Encoding: chunked, identity\r\n",
        "Content-Length: 48\r\nTransfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Transfer-Encoding : chunked\r\n",
        "Transfer-Encoding: identity\r\n",
    ] {
        let request = format!(
            "POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\n{framing}\r\n\
             0\r\n\r\nGET /anthropic/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        assert_refused_by_http_layer(request.as_bytes(), 400).await;
    }
}

#[actix_rt::test]
async fn duplicate_content_length_is_refused() {
    for lengths in [
        "Content-Length: 2\r\nContent-Length: 2\r\n",
        "Content-Length: 2\r\nContent-Length: 40\r\n",
        "Content-Length: 2, 2\r\n",
        "Content-Length: +2\r\n",
        "Content-Length: -1\r\n",
    ] {
        let request = format!(
            "POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\n{lengths}\r\n{{}}GET /anthropic/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        assert_refused_by_http_layer(request.as_bytes(), 400).await;
    }
}

#[actix_rt::test]
async fn header_block_over_the_limit_is_431() {
    // actix-http's limits: 96 headers, 128 KiB of head.
    let mut many = String::from("GET /anthropic/v1/models HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-Many-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    assert_refused_by_http_layer(many.as_bytes(), 431).await;
    let big = format!(
        "GET /anthropic/v1/models HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(140 * 1024)
    );
    assert_refused_by_http_layer(big.as_bytes(), 431).await;
}

#[actix_rt::test]
async fn declared_body_over_the_limit_is_413_and_never_contacts_upstream() {
    let fake = contacted_upstream();
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy)
        .toml("[limits]\nmax_request_body_bytes = 1000")
        .start();
    let request = format!(
        "POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\nConnection: close\r\n\r\n{}",
        "x".repeat(1001)
    );
    assert_sluice_error(
        &answer(sluice.addr, request.as_bytes()),
        413,
        "body_too_large",
    );
    assert_eq!(fake.accepted(), 0);
    assert_outcome(&sluice, "body_too_large");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["by_status"]["413"], 1);
    assert_eq!(stats["totals"]["errors"], 1);
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn chunked_body_over_the_limit_is_413_and_upstream_never_gets_all_of_it() {
    let fake = contacted_upstream();
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy)
        .toml("[limits]\nmax_request_body_bytes = 1000")
        .start();
    let piece = "x".repeat(600);
    let request = format!(
        "POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         258\r\n{piece}\r\n258\r\n{piece}\r\n0\r\n\r\n"
    );
    assert_sluice_error(
        &answer(sluice.addr, request.as_bytes()),
        413,
        "body_too_large",
    );
    // The upstream may have seen the start of it, never a complete 1200-byte body.
    std::thread::sleep(Duration::from_millis(200));
    for conn in fake.conns() {
        assert!(conn.body_bytes < 1200, "{conn:?}");
    }
    assert_outcome(&sluice, "body_too_large");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["by_status"]["413"], 1);
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn dot_dot_paths_in_any_encoding_are_400_and_never_forwarded() {
    let fake = contacted_upstream();
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let paths = [
        "/anthropic/../stats",
        "/anthropic/..",
        "/anthropic/v1/../../healthy/v1/messages",
        "/anthropic/%2e%2e/x",
        "/anthropic/%2E%2E/x",
        "/anthropic/.%2e/x",
        "/anthropic/%2e./x",
        "/anthropic/v1/..%2f..%2fx",
        "/anthropic/v1/%2e%2e%2fx",
        "/anthropic/%252e%252e/x",
        "/anthropic/v1/..%5c..%5cx",
        "/anthropic/v1/..?q=1",
    ];
    for path in paths {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = answer(sluice.addr, request.as_bytes());
        assert_sluice_error(&answer, 400, "bad_path");
    }
    assert_eq!(fake.accepted(), 0);
    assert_outcome(&sluice, "bad_path");
    let stats = counted(&sluice, paths.len() as u64).await;
    assert_eq!(stats["by_status"]["400"], paths.len() as u64);
    // Dots that do not escape are forwarded as they are.
    let answer = answer(
        sluice.addr,
        b"GET /anthropic/v1/./models/a..b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(answer.status, 200);
    assert_eq!(
        fake.conns()[0].target().as_deref(),
        Some("/v1/./models/a..b")
    );
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn absolute_form_targets_never_reach_another_host() {
    let fake = contacted_upstream();
    let elsewhere = contacted_upstream();
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let other = elsewhere.addr;
    let absolute = format!(
        "GET http://{other}/anthropic/v1/models HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n"
    );
    let answer = answer(sluice.addr, absolute.as_bytes());
    // Only the path counts: it goes to the configured upstream, with the upstream's host.
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert_eq!(fake.accepted(), 1);
    assert_eq!(fake.conns()[0].target().as_deref(), Some("/v1/models"));
    assert_eq!(
        fake.conns()[0].header("host"),
        Some(fake.addr.to_string()),
        "the client's Host must not go upstream"
    );
    // A Host header naming another host changes nothing either.
    let answer = crate::answer(
        sluice.addr,
        format!("GET /anthropic/v1/models HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(answer.status, 200);
    assert_eq!(fake.conns()[1].header("host"), Some(fake.addr.to_string()));
    // Absolute form naming another host with a path outside every route, and CONNECT.
    for request in [
        format!(
            "GET http://{other}/v1/models HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n"
        ),
        format!("CONNECT {other} HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n"),
    ] {
        assert_sluice_error(
            &crate::answer(sluice.addr, request.as_bytes()),
            404,
            "no_route",
        );
    }
    assert_eq!(elsewhere.accepted(), 0, "sluice connected to another host");
    assert_eq!(fake.accepted(), 2);
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn cr_lf_or_nul_in_header_values_is_refused_and_never_forwarded() {
    for value in [
        &b"a\rb"[..],
        b"a\0b",
        b"a\r\n b",
        b"a\r\nX-Injected: 1\rc",
        b"\x7f",
    ] {
        let mut request = b"GET /anthropic/v1/models HTTP/1.1\r\nHost: x\r\nX-Test: ".to_vec();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        assert_refused_by_http_layer(&request, 400).await;
    }
}

#[actix_rt::test]
async fn bare_lf_and_encoded_crlf_never_put_control_bytes_upstream() {
    let fake = contacted_upstream();
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    // A bare LF ends a header line for actix-web's parser (RFC 9112 §2.2 allows it): the rest
    // becomes a header of its own, never a value holding a line break.
    let raw = exchange(
        sluice.addr,
        b"GET /anthropic/v1/models HTTP/1.1\r\nHost: x\r\nX-Test: a\nX-Second: b\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    let answer = RawAnswer::parse(&raw).expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert_eq!(fake.conns()[0].header("x-test").as_deref(), Some("a"));
    assert_eq!(fake.conns()[0].header("x-second").as_deref(), Some("b"));
    // Percent-encoded CR LF in the path stays encoded on the way up.
    let answer = crate::answer(
        sluice.addr,
        b"GET /anthropic/v1/x%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(answer.status, 200);
    std::thread::sleep(Duration::from_millis(100));
    for conn in fake.conns() {
        let head = conn.head.unwrap_or_default();
        assert!(
            !head.to_ascii_lowercase().contains("x-injected: 1"),
            "{head}"
        );
        for line in head.split("\r\n") {
            assert!(
                !line.contains('\n') && !line.contains('\r') && !line.contains('\0'),
                "{line:?}"
            );
        }
    }
    assert!(fake
        .conns()
        .iter()
        .any(|c| c.target().as_deref() == Some("/v1/x%0d%0aX-Injected:%201")));
    assert_still_serving(&sluice);
}

#[actix_rt::test]
async fn nothing_pipelined_after_a_connection_close_request_is_processed() {
    let fake = contacted_upstream();
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let mut pipelined = post("/anthropic/v1/messages", "");
    pipelined.extend_from_slice(
        b"GET /anthropic/v1/second HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let raw = exchange(sluice.addr, &pipelined, Duration::from_secs(5));
    let answer = RawAnswer::parse(&raw).expect("an answer to the first request");
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert_eq!(
        answer.answers(),
        1,
        "answered after connection: close: {}",
        answer.raw
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        fake.accepted(),
        1,
        "a request after connection: close went upstream"
    );
    // A large closing answer still arrives whole before the connection ends.
    let big = "x".repeat(4 << 20);
    healthy.always(Reply::Full(200, vec![], big.clone().into()));
    let mut pipelined = post("/healthy/v1/messages", "");
    pipelined.extend_from_slice(b"GET /healthy/v1/second HTTP/1.1\r\nHost: x\r\n\r\n");
    let raw = exchange(sluice.addr, &pipelined, Duration::from_secs(10));
    let answer = RawAnswer::parse(&raw).expect("an answer to the first request");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), big.len(), "the closing answer was cut");
    assert_eq!(healthy.received().len(), 1);
    counted(&sluice, 2).await;
}

#[actix_rt::test]
async fn malformed_chunked_body_is_answered_400_client_body_and_counted_so() {
    let fake = contacted_upstream();
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy).start();
    let request = b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n";
    let raw = exchange(sluice.addr, request, Duration::from_secs(5));
    let answer = RawAnswer::parse(&raw).unwrap_or_else(|| {
        panic!(
            "no answer to a malformed chunked body: {:?}",
            String::from_utf8_lossy(&raw)
        )
    });
    assert_sluice_error(&answer, 400, "client_body");
    assert_eq!(answer.answers(), 1, "{}", answer.raw);
    assert_outcome(&sluice, "client_body");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["by_status"]["400"], 1, "{}", stats["by_status"]);
    assert_still_serving(&sluice);
}

/// Sends 50 of 100 declared body bytes and then nothing; returns the answer and how long it
/// took.
fn stalled_upload(sluice: &Sluice) -> (RawAnswer, Duration) {
    let mut stream = TcpStream::connect(sluice.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    stream
        .write_all(
            format!(
                "POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}",
                "x".repeat(50)
            )
            .as_bytes(),
        )
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !matches!(RawAnswer::parse(&raw), Some(a) if !a.body.is_empty()) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let answer = RawAnswer::parse(&raw).unwrap_or_else(|| {
        panic!(
            "no answer to a stalled upload: {:?}",
            String::from_utf8_lossy(&raw)
        )
    });
    (answer, start.elapsed())
}

#[actix_rt::test]
async fn a_stalled_upload_is_a_408_client_timeout_and_no_upstream_failure() {
    // The stall is seen after `idle_ms`, or at `first_byte_ms` when that comes first.
    for timeouts in [
        "idle_ms = 400\nfirst_byte_ms = 5000",
        "idle_ms = 5000\nfirst_byte_ms = 400",
    ] {
        let fake = FakeUpstream::start(vec![Step::ReadHead, Step::ReadBody, Step::Hold]);
        let healthy = MockUpstream::start();
        let sluice = sluice_before(&fake.url(), &healthy)
            .toml(&format!("[timeouts]\n{timeouts}"))
            .start();
        let (answer, took) = stalled_upload(&sluice);
        assert_sluice_error(&answer, 408, "client_timeout");
        assert!(
            took < Duration::from_secs(3),
            "{timeouts}: answered after {took:?}"
        );
        assert_outcome(&sluice, "client_timeout");
        let stats = counted(&sluice, 1).await;
        assert_eq!(stats["by_status"]["408"], 1, "{}", stats["by_status"]);
        let health = &stats["upstreams"]["/anthropic"];
        assert_eq!(
            health["failed"], 0,
            "{timeouts}: blamed on the upstream: {health}"
        );
        assert_still_serving(&sluice);
    }
}

#[actix_rt::test]
async fn a_client_that_never_reads_is_closed_after_idle_and_counted_client_stalled() {
    // A streamed answer far larger than every socket buffer on the way.
    let mut answer = sse_started();
    let event = "event: ping\ndata: {\"type\":\"ping\"}\n\n".repeat(2000);
    for _ in 0..400 {
        answer.extend(chunk(event.as_bytes()));
    }
    let fake = FakeUpstream::start(vec![
        Step::ReadHead,
        Step::ReadBody,
        Step::Write(answer),
        Step::Hold,
    ]);
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy)
        .toml("[timeouts]\nidle_ms = 500")
        .start();
    let mut stream = TcpStream::connect(sluice.addr).unwrap();
    stream
        .write_all(&post("/anthropic/v1/messages", ""))
        .unwrap();
    // Never read. Once the buffers are full nothing more can be written to the client.
    let closed = fake.wait_peer_closed(0, Duration::from_secs(6));
    assert!(
        closed.is_some(),
        "the upstream connection is still open with a client that does not read"
    );
    assert_outcome(&sluice, "client_stalled");
    let stats = counted(&sluice, 1).await;
    assert_eq!(stats["totals"]["incomplete"], 1, "{}", stats["totals"]);
    drop(stream);
    assert_still_serving(&sluice);
}
