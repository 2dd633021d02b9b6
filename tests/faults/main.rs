//! Reliability and security: a misbehaving upstream, misbehaving clients, chaos under load,
//! cancellation, access control, graceful shutdown and crash safety — each against the real
//! sluice binary.

#[path = "../support/mod.rs"]
mod support;

mod fake;

mod access;
mod chaos;
mod client_faults;
mod shutdown;
mod upstream_faults;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::*;

/// An HTTP/1.1 answer read off a raw socket.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    /// Everything received, for messages.
    pub raw: String,
}

impl RawAnswer {
    /// Parses the first answer in `raw`; `None` when nothing (or not HTTP) came back.
    pub fn parse(raw: &[u8]) -> Option<RawAnswer> {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some(RawAnswer {
            status,
            head,
            body: raw[end + 4..].to_vec(),
            raw: String::from_utf8_lossy(raw).into_owned(),
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// How many answers the bytes hold (a smuggled second request would show as a second one).
    pub fn answers(&self) -> usize {
        self.raw.matches("HTTP/1.1 ").count()
    }
}

/// Sends `request` on a new connection and reads until sluice closes it (or `timeout`).
pub fn exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    // A refused request may be answered and closed before all of it is written.
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// Like [`exchange`], parsed; panics when no HTTP answer came.
pub fn answer(addr: SocketAddr, request: &[u8]) -> RawAnswer {
    let raw = exchange(addr, request, Duration::from_secs(10));
    RawAnswer::parse(&raw).unwrap_or_else(|| {
        panic!(
            "no HTTP answer to {:?}: {:?}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Asserts an answer is sluice's own error: status, `x-sluice-error` kind, Anthropic's shape.
pub fn assert_sluice_error(answer: &RawAnswer, status: u16, kind: &str) {
    assert_eq!(answer.status, status, "{}", answer.raw);
    assert_eq!(
        answer.header("x-sluice-error").as_deref(),
        Some(kind),
        "{}",
        answer.raw
    );
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("{e}: not JSON: {}", answer.raw));
    assert_eq!(body["type"], "error", "{body}");
    let expected_type = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        404 => "not_found_error",
        405 => "invalid_request_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        _ => "api_error",
    };
    assert_eq!(body["error"]["type"], expected_type, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sluice: "),
        "{body}"
    );
}

/// A POST to `path` with a small JSON body, as raw bytes (connection closed after).
/// Starts a streamed request on a raw connection and reads until `marker` has arrived.
pub fn stream_started(sluice: &Sluice, marker: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(sluice.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&post("/anthropic/v1/messages", ""))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended before {marker}");
        seen.extend_from_slice(&buf[..n]);
    }
    (stream, seen)
}

pub fn post(path: &str, extra_headers: &str) -> Vec<u8> {
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[]}"#;
    format!(
        "POST {path} HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// sluice still answers `/healthz` and still proxies (to a healthy mock on `/healthy`).
/// Adds one request to `/stats`.
pub fn assert_still_serving(sluice: &Sluice) {
    let health = answer(
        sluice.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(health.status, 200, "{}", health.raw);
    assert_eq!(health.body, b"ok");
    let proxied = answer(sluice.addr, &post("/healthy/v1/messages", ""));
    assert_eq!(proxied.status, 200, "{}", proxied.raw);
}

/// sluice with `/anthropic` → `upstream` and `/healthy` → a well-behaved mock.
pub fn sluice_before(upstream: &str, healthy: &MockUpstream) -> SluiceBuilder {
    sluice()
        .route("/anthropic", upstream, &[])
        .route("/healthy", &healthy.url(), &[])
}

/// Waits for the `sluice::usage` line of a request with this outcome.
pub fn assert_outcome(sluice: &Sluice, outcome: &str) {
    sluice.wait_for_log(&format!("outcome={outcome}"), Duration::from_secs(5));
}

/// The counters of `/stats` once `n` requests are in: asserts exactly `n`, and returns them.
pub async fn counted(sluice: &Sluice, n: u64) -> serde_json::Value {
    let stats = stats_after(sluice, n, None).await;
    assert_eq!(stats["totals"]["requests"], n, "{}", stats["totals"]);
    stats
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
