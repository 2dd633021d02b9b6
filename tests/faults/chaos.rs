//! A bounded chaos run: a few thousand requests, 32 at a time, a third of them faults of the
//! upstream or of the client. Afterwards every request is in `/stats` with the right status, no
//! panic was logged, and open files and memory are back near where they started.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fake::*;
use crate::support::*;
use crate::*;

/// What one request of the run does, and the status the client must see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Json,
    Stream,
    // Upstream faults.
    Garbage,
    ClosesUnanswered,
    NeverAnswers,
    FallsSilent,
    CutsStream,
    // Client faults.
    BadPath,
    TooLarge,
    NoRoute,
    LeavesMidStream,
}

impl Kind {
    /// Two thirds well-behaved, one third spread over the faults.
    fn of(n: usize) -> Kind {
        const FAULTS: [Kind; 9] = [
            Kind::Garbage,
            Kind::ClosesUnanswered,
            Kind::NeverAnswers,
            Kind::FallsSilent,
            Kind::CutsStream,
            Kind::BadPath,
            Kind::TooLarge,
            Kind::NoRoute,
            Kind::LeavesMidStream,
        ];
        match n % 3 {
            0 => Kind::Json,
            1 => Kind::Stream,
            _ => FAULTS[(n / 3) % FAULTS.len()],
        }
    }

    fn status(self) -> u16 {
        match self {
            Kind::Garbage | Kind::ClosesUnanswered => 502,
            Kind::NeverAnswers => 504,
            Kind::BadPath => 400,
            Kind::TooLarge => 413,
            Kind::NoRoute => 404,
            _ => 200,
        }
    }

    fn request(self) -> Vec<u8> {
        match self {
            Kind::Json => post("/anthropic/json", ""),
            Kind::Stream => post("/anthropic/stream", ""),
            Kind::Garbage => post("/anthropic/garbage", ""),
            Kind::ClosesUnanswered => post("/anthropic/close", ""),
            Kind::NeverAnswers => post("/anthropic/never", ""),
            Kind::FallsSilent => post("/anthropic/silent", ""),
            Kind::CutsStream => post("/anthropic/cut", ""),
            Kind::LeavesMidStream => post("/anthropic/endless", ""),
            Kind::BadPath => post("/anthropic/%2e%2e/stats", ""),
            Kind::NoRoute => post("/elsewhere/v1/messages", ""),
            Kind::TooLarge => format!(
                "POST /anthropic/json HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{}",
                "x".repeat(5000)
            )
            .into_bytes(),
        }
    }
}

fn chaotic_upstream() -> FakeUpstream {
    let start = sse_started();
    FakeUpstream::by_target(move |target| {
        let answer = match target {
            "/json" => vec![Step::Write(json_answer(200, MESSAGE))],
            "/stream" => {
                let mut whole = start.clone();
                whole.extend(chunk(SSE_END.as_bytes()));
                whole.extend(last_chunk());
                vec![Step::Write(whole)]
            }
            "/garbage" => vec![Step::Write(b"\x16\x03\x01 garbage\r\n\r\n".to_vec())],
            "/close" => vec![],
            "/never" => vec![Step::Hold],
            "/silent" | "/endless" => vec![Step::Write(start.clone()), Step::Hold],
            "/cut" => vec![Step::Write(start.clone())],
            other => panic!("unexpected target {other}"),
        };
        let mut script = vec![Step::ReadBody];
        script.extend(answer);
        script.push(Step::Close);
        script
    })
}

/// Sends one request of `kind`; returns the status the client saw.
fn send(addr: SocketAddr, kind: Kind) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let _ = stream.write_all(&kind.request());
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if kind == Kind::LeavesMidStream
            && String::from_utf8_lossy(&seen).contains("content_block_start")
        {
            break; // and leave
        }
    }
    RawAnswer::parse(&seen).map(|a| a.status)
}

/// Runs requests `range` with 32 clients at a time; returns the statuses seen, in order.
fn run(addr: SocketAddr, range: std::ops::Range<usize>) -> Vec<(Kind, Option<u16>)> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let results = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (next, results, end) = (next.clone(), results.clone(), range.end);
            std::thread::spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    break;
                }
                let kind = Kind::of(n);
                let status = send(addr, kind);
                results.lock().unwrap().push((kind, status));
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    Arc::try_unwrap(results).unwrap().into_inner().unwrap()
}

/// Open descriptors and resident memory (kB), once the process has settled.
fn footprint(sluice: &Sluice) -> (usize, u64) {
    std::thread::sleep(Duration::from_millis(500));
    (open_fds(sluice.pid()), sluice.memory_kb("VmRSS"))
}

#[actix_rt::test]
async fn thousands_of_requests_a_third_faulty_are_all_counted_and_leave_no_residue() {
    const WARM_UP: usize = 300;
    const TOTAL: usize = 2700;
    let fake = chaotic_upstream();
    let healthy = MockUpstream::start();
    let sluice = sluice_before(&fake.url(), &healthy)
        .toml("[timeouts]\nfirst_byte_ms = 300\nidle_ms = 300\n[limits]\nmax_request_body_bytes = 4096")
        .start();

    let mut results = run(sluice.addr, 0..WARM_UP);
    stats_after(&sluice, WARM_UP as u64, None).await;
    let (fds_before, rss_before) = footprint(&sluice);
    let start = Instant::now();
    results.extend(run(sluice.addr, WARM_UP..TOTAL));
    let took = start.elapsed();

    for (kind, status) in &results {
        assert_eq!(*status, Some(kind.status()), "{kind:?}");
    }
    let stats = stats_after(&sluice, TOTAL as u64, None).await;
    let totals = &stats["totals"];
    assert_eq!(totals["requests"], TOTAL as u64, "{totals}");
    let mut by_status = std::collections::BTreeMap::<String, u64>::new();
    for (kind, _) in &results {
        *by_status.entry(kind.status().to_string()).or_default() += 1;
    }
    assert_eq!(
        stats["by_status"],
        serde_json::to_value(&by_status).unwrap(),
        "{}",
        stats["by_status"]
    );
    let errors: u64 = by_status
        .iter()
        .filter(|(s, _)| s.as_str() >= "400")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(totals["errors"], errors);
    let count = |k: Kind| results.iter().filter(|(kind, _)| *kind == k).count() as u64;
    // Streams that fell silent or lost their client are incomplete (cut ones should be too).
    let incomplete = totals["incomplete"].as_u64().unwrap();
    let early = count(Kind::FallsSilent) + count(Kind::LeavesMidStream);
    assert!(
        incomplete >= early && incomplete <= early + count(Kind::CutsStream),
        "incomplete {incomplete}, expected {early} (+ up to {} cut)",
        count(Kind::CutsStream)
    );
    assert_eq!(stats["dropped_records"], 0);

    let (fds_after, rss_after) = footprint(&sluice);
    assert!(
        fds_after <= fds_before + 4,
        "open descriptors {fds_before} → {fds_after}"
    );
    assert!(
        rss_after <= rss_before + 20 * 1024,
        "RSS {rss_before} kB → {rss_after} kB"
    );
    let logs = sluice.logs();
    assert!(!logs.contains("panicked"), "a panic was logged");
    eprintln!(
        "chaos: {} requests in {took:?}; fds {fds_before} → {fds_after}; RSS {rss_before} → {rss_after} kB",
        TOTAL - WARM_UP
    );
    assert_still_serving(&sluice);
}
