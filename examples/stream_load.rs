//! Holds many concurrent SSE streams open against a URL and measures each event's latency.
//!
//! Every stream is its own HTTP/1.1 connection posting a streaming Messages request; the
//! `mock_upstream` example answers it with `--events` deltas `--interval-ms` apart, stamping
//! each event with `"sent_us"`. Latency of an event = the moment its bytes were read here minus
//! `sent_us` (both clocks are this machine's). Prints one JSON object; exits 1 if any stream
//! failed or ended short. A hand-written HTTP/1.1 reader keeps the client small and cheap, so
//! with one thread it leaves the CPU to the server under test.
//!
//! Run: `stream_load --url http://127.0.0.1:4080/anthropic/v1/messages --streams 1000`
//! (needs `ulimit -n` above the stream count).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "Open many concurrent SSE streams and measure per-event latency")]
struct Args {
    /// Full URL (http only), e.g. http://127.0.0.1:4080/anthropic/v1/messages
    #[arg(long)]
    url: String,
    /// Concurrent streams, one connection each.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// content_block_delta events each stream must deliver (sent upstream as x-mock-events).
    #[arg(long, default_value_t = 10)]
    events: u32,
    /// Gap between deltas, ms (sent upstream as x-mock-interval-ms).
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Spread the stream starts evenly over this many ms (0 = all at once).
    #[arg(long, default_value_t = 0)]
    ramp_ms: u64,
    /// Give up on a stream after this many seconds (default: ramp + stream length + 60 s).
    #[arg(long)]
    timeout_s: Option<u64>,
    /// Extra request header, `name: value`; repeatable.
    #[arg(
        long = "header",
        default_value = "x-api-key: sk-ant-api03-test-bench-key"
    )]
    headers: Vec<String>,
    /// Client runtime threads (1 leaves the other core to the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

const REQUEST_BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Hello"}]}"#;
/// Largest response head accepted, so a broken server cannot grow the buffer without end.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest single SSE event accepted.
const MAX_EVENT_BYTES: usize = 1024 * 1024;
const MAX_ERROR_SAMPLES: usize = 10;

struct Target {
    host_port: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if !host_port.contains(':') {
        return Err(format!("URL needs an explicit port: {url}"));
    }
    Ok(Target {
        host_port: host_port.to_string(),
        path: path.to_string(),
    })
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Shared across all streams; with the default single-threaded runtime nobody waits on a lock.
struct Totals {
    latency_us: Mutex<Histogram<u64>>,
    active: AtomicUsize,
    max_active: AtomicUsize,
    ok: AtomicUsize,
    events: AtomicUsize,
    deltas: AtomicUsize,
    errors: Mutex<Vec<(String, String)>>,
}

impl Totals {
    fn stream_opened(&self) {
        let now = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_active.fetch_max(now, Ordering::Relaxed);
    }
    fn stream_closed(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
    fn fail(&self, kind: &str, detail: String) {
        self.errors.lock().unwrap().push((kind.to_string(), detail));
    }
}

/// How the response body ends (RFC 9112 §6.3).
enum Framing {
    Chunked(ChunkState),
    Length(usize),
    Close,
}

#[derive(Clone, Copy)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
}

/// Moves the body bytes in `raw` into `out`, undoing chunked encoding; returns true once the
/// body is complete.
fn decode_body(
    framing: &mut Framing,
    raw: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<bool, String> {
    match framing {
        Framing::Close => {
            out.extend_from_slice(raw);
            raw.clear();
            Ok(false)
        }
        Framing::Length(left) => {
            let take = (*left).min(raw.len());
            out.extend_from_slice(&raw[..take]);
            raw.advance(take);
            *left -= take;
            Ok(*left == 0)
        }
        Framing::Chunked(state) => loop {
            match *state {
                ChunkState::Size | ChunkState::Trailer => {
                    let Some(end) = find(raw, b"\r\n") else {
                        return Ok(false);
                    };
                    let line = raw.split_to(end + 2);
                    let line = &line[..end];
                    if matches!(state, ChunkState::Trailer) {
                        if line.is_empty() {
                            *state = ChunkState::Done;
                        }
                        continue;
                    }
                    let text =
                        std::str::from_utf8(line).map_err(|_| "bad chunk size".to_string())?;
                    let hex = text.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad chunk size {hex:?}"))?;
                    *state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if raw.is_empty() {
                        return Ok(false);
                    }
                    let take = left.min(raw.len());
                    out.extend_from_slice(&raw[..take]);
                    raw.advance(take);
                    *state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if raw.len() < 2 {
                        return Ok(false);
                    }
                    if &raw[..2] != b"\r\n" {
                        return Err("chunk not followed by CRLF".into());
                    }
                    raw.advance(2);
                    *state = ChunkState::Size;
                }
                ChunkState::Done => return Ok(true),
            }
        },
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a stream has seen so far.
#[derive(Default)]
struct StreamProgress {
    events: usize,
    deltas: u32,
    stopped: bool,
    latencies: Vec<u64>,
}

/// Takes every complete SSE event out of `sse` and records it as received at `recv_us`.
fn take_events(
    sse: &mut BytesMut,
    recv_us: u64,
    progress: &mut StreamProgress,
) -> Result<(), String> {
    while let Some(end) = find(sse, b"\n\n") {
        let event = sse.split_to(end + 2);
        let text = std::str::from_utf8(&event).map_err(|_| "event is not UTF-8".to_string())?;
        let mut name = "";
        let mut sent_us = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim();
            } else if let Some(data) = line.strip_prefix("data:") {
                sent_us = sent_micros(data);
            }
        }
        progress.events += 1;
        match name {
            "content_block_delta" => progress.deltas += 1,
            "message_stop" => progress.stopped = true,
            _ => {}
        }
        if let Some(sent) = sent_us {
            progress.latencies.push(recv_us.saturating_sub(sent));
        }
    }
    if sse.len() > MAX_EVENT_BYTES {
        return Err("SSE event larger than 1 MiB".into());
    }
    Ok(())
}

/// The `"sent_us":<digits>` field the mock puts in every event, without parsing the JSON.
fn sent_micros(data: &str) -> Option<u64> {
    let at = data.find("\"sent_us\":")? + "\"sent_us\":".len();
    let digits: &str = &data[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// One stream, start to finish. Errors come back as (kind, detail).
async fn run_stream(
    request: Arc<Vec<u8>>,
    host_port: Arc<String>,
    totals: Arc<Totals>,
    events: u32,
) -> Result<(), (&'static str, String)> {
    let mut sock = TcpStream::connect(host_port.as_str())
        .await
        .map_err(|e| ("connect", e.to_string()))?;
    sock.set_nodelay(true).ok();
    sock.write_all(&request)
        .await
        .map_err(|e| ("write", e.to_string()))?;

    // Response head.
    let mut raw = BytesMut::with_capacity(4096);
    let head_end = loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            break end;
        }
        if raw.len() > MAX_HEAD_BYTES {
            return Err(("head", "response head over 64 KiB".into()));
        }
        if sock
            .read_buf(&mut raw)
            .await
            .map_err(|e| ("read", e.to_string()))?
            == 0
        {
            return Err(("closed", "connection closed before response head".into()));
        }
    };
    let head = raw.split_to(head_end + 4);
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(("status", status.to_string()));
    }
    let mut framing = Framing::Close;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked(ChunkState::Size);
        } else if name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked(_))
        {
            framing = Framing::Length(
                value
                    .parse()
                    .map_err(|_| ("head", format!("bad content-length {value:?}")))?,
            );
        }
    }

    // Body: decode, split into events, stamp each with the time its bytes arrived.
    totals.stream_opened();
    let mut progress = StreamProgress::default();
    let mut sse = BytesMut::with_capacity(1024);
    let body = async {
        loop {
            let recv_us = unix_micros();
            let done = decode_body(&mut framing, &mut raw, &mut sse).map_err(|e| ("framing", e))?;
            take_events(&mut sse, recv_us, &mut progress).map_err(|e| ("sse", e))?;
            if done {
                return Ok(());
            }
            if sock
                .read_buf(&mut raw)
                .await
                .map_err(|e| ("read", e.to_string()))?
                == 0
            {
                return match framing {
                    Framing::Close => Ok(()),
                    _ => Err(("closed", "connection closed mid-body".to_string())),
                };
            }
        }
    };
    let outcome = body.await;
    totals.stream_closed();

    totals.events.fetch_add(progress.events, Ordering::Relaxed);
    totals
        .deltas
        .fetch_add(progress.deltas as usize, Ordering::Relaxed);
    {
        let mut hist = totals.latency_us.lock().unwrap();
        for l in &progress.latencies {
            hist.saturating_record(*l);
        }
    }
    outcome?;
    if progress.deltas < events || !progress.stopped {
        return Err((
            "short",
            format!(
                "{} of {events} deltas, message_stop: {}",
                progress.deltas, progress.stopped
            ),
        ));
    }
    Ok(())
}

/// The soft open-files limit of this process, from /proc (no libc needed).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn build_request(args: &Args, target: &Target) -> Vec<u8> {
    let mut req = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: text/event-stream\r\nanthropic-version: 2023-06-01\r\nx-mock-events: {}\r\nx-mock-interval-ms: {}\r\ncontent-length: {}\r\n",
        target.path,
        target.host_port,
        args.events,
        args.interval_ms,
        REQUEST_BODY.len()
    );
    for h in &args.headers {
        req.push_str(h.trim());
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(REQUEST_BODY);
    req.into_bytes()
}

async fn run(args: Args) -> Result<bool, String> {
    let target = parse_url(&args.url)?;
    if let Some(limit) = open_files_limit() {
        if limit < args.streams + 32 {
            return Err(format!(
                "open-files limit {limit} is too low for {} streams: run `ulimit -n {}` first",
                args.streams,
                args.streams + 1024
            ));
        }
    }
    let stream_len_ms = args.interval_ms.saturating_mul(args.events as u64);
    let timeout = Duration::from_secs(
        args.timeout_s
            .unwrap_or((args.ramp_ms + stream_len_ms) / 1000 + 60),
    );
    let request = Arc::new(build_request(&args, &target));
    let host_port = Arc::new(target.host_port.clone());
    let totals = Arc::new(Totals {
        latency_us: Mutex::new(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?,
        ),
        active: AtomicUsize::new(0),
        max_active: AtomicUsize::new(0),
        ok: AtomicUsize::new(0),
        events: AtomicUsize::new(0),
        deltas: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
    });

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let start_at = tokio::time::Instant::from_std(started)
            + Duration::from_micros(args.ramp_ms * 1000 * i as u64 / args.streams.max(1) as u64);
        let (request, host_port, totals) = (request.clone(), host_port.clone(), totals.clone());
        let events = args.events;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            match tokio::time::timeout(
                timeout,
                run_stream(request, host_port, totals.clone(), events),
            )
            .await
            {
                Ok(Ok(())) => {
                    totals.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err((kind, detail))) => totals.fail(kind, detail),
                Err(_) => totals.fail(
                    "timeout",
                    format!("stream not finished after {}s", timeout.as_secs()),
                ),
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            totals.fail("panic", e.to_string());
        }
    }
    let wall = started.elapsed();

    let errors = totals.errors.lock().unwrap();
    let mut by_kind = serde_json::Map::new();
    for (kind, _) in errors.iter() {
        let n = by_kind.get(kind).and_then(|v| v.as_u64()).unwrap_or(0);
        by_kind.insert(kind.clone(), (n + 1).into());
    }
    let samples: Vec<String> = errors
        .iter()
        .take(MAX_ERROR_SAMPLES)
        .map(|(k, d)| format!("{k}: {d}"))
        .collect();
    let hist = totals.latency_us.lock().unwrap();
    let ok = totals.ok.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "url": args.url,
        "streams": args.streams,
        "ok": ok,
        "failed": args.streams - ok,
        "events_per_stream": args.events,
        "interval_ms": args.interval_ms,
        "deltas_received": totals.deltas.load(Ordering::Relaxed),
        "events_received": totals.events.load(Ordering::Relaxed),
        "max_concurrent": totals.max_active.load(Ordering::Relaxed),
        "latency_us": {
            "count": hist.len(),
            "p50": hist.value_at_quantile(0.50),
            "p90": hist.value_at_quantile(0.90),
            "p99": hist.value_at_quantile(0.99),
            "max": hist.max(),
        },
        "wall_s": (wall.as_secs_f64() * 1000.0).round() / 1000.0,
        "errors": by_kind,
        "error_samples": samples,
    });
    println!("{report}");
    Ok(ok == args.streams)
}

fn main() {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = runtime.unwrap_or_else(|e| {
        eprintln!("stream_load: cannot start runtime: {e}");
        std::process::exit(2);
    });
    match runtime.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("stream_load: {e}");
            std::process::exit(2);
        }
    }
}
