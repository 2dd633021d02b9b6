//! A fast stand-in for the Anthropic Messages API and OpenAI's Responses API, for benchmarks
//! (`bench/run.sh`).
//!
//! Every request, whatever its method or path, gets a fixed realistic `/v1/messages` answer;
//! a path ending in `/responses` gets the Responses API's instead (the same schedule, as
//! `response.created` … `response.output_text.delta` … `response.completed` with its usage).
//! A request whose body contains `"stream":true` (or that carries `x-mock-stream: 1`) gets an
//! Anthropic-shaped SSE stream instead: message_start, content_block_start, ping,
//! `x-mock-events` content_block_delta events (default 10) `x-mock-interval-ms` apart
//! (default 100), content_block_stop, message_delta, message_stop. Every event's JSON carries
//! `"sent_us":<unix micros>`, stamped as the event is handed to the socket, so a client can
//! measure how long each event took to reach it (see `stream_load`).
//!
//! With `--tls-cert` and `--tls-key` (PEM files) it serves HTTPS instead, offering HTTP/2 and
//! HTTP/1.1 by ALPN, as the real API does.
//!
//! Run: `cargo run --release --example mock_upstream -- --listen 127.0.0.1:9001 --workers 1`

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{http::header, web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use clap::Parser;
use futures_util::stream;

#[derive(Parser, Debug)]
#[command(about = "Fast mock of the Anthropic Messages API (JSON and slow SSE streams)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// actix worker threads (the benchmarks use 1).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

/// TLS settings from PEM files; actix adds h2 and http/1.1 to ALPN.
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: rustls_pki_types::pem::Error| std::io::Error::other(e.to_string());
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(invalid)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(invalid)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(std::io::Error::other)
}

/// The non-streaming answer: the shape of a real `POST /v1/messages` reply, built once.
const MESSAGE_JSON: &str = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":11,"service_tier":"standard"}}"#;

/// The non-streaming Responses API answer, built once.
const RESPONSE_JSON: &str = r#"{"id":"resp_mock","object":"response","created_at":1764972100,"status":"completed","error":null,"model":"gpt-5.3-codex","output":[{"id":"msg_mock","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"text":"Hello! How can I help you today?"}]}],"service_tier":"default","usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":23}}"#;

/// Which API's answers the mock gives a request, by its path.
#[derive(Clone, Copy)]
enum Api {
    Messages,
    Responses,
}

impl Api {
    fn of(req: &HttpRequest) -> Self {
        if req.path().ends_with("/responses") {
            Api::Responses
        } else {
            Api::Messages
        }
    }
}

const DEFAULT_EVENTS: u32 = 10;
const DEFAULT_INTERVAL_MS: u64 = 100;
/// Upper bounds so a mistyped header cannot make the mock stream forever.
const MAX_EVENTS: u32 = 100_000;
const MAX_INTERVAL_MS: u64 = 60_000;

fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn header_value<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn header_number<T: std::str::FromStr>(req: &HttpRequest, name: &str) -> Option<T> {
    header_value(req, name).and_then(|v| v.parse().ok())
}

/// `"stream":true` with or without a space: cheap enough to check on every request, and the
/// body is never parsed so the mock stays fast.
fn wants_stream(req: &HttpRequest, body: &[u8]) -> bool {
    if header_value(req, "x-mock-stream") == Some("1") {
        return true;
    }
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    contains(br#""stream":true"#) || contains(br#""stream": true"#)
}

/// The SSE events of one streamed answer, in order; `{SENT}` is replaced by the send time.
#[derive(Clone, Copy)]
enum Step {
    MessageStart,
    BlockStart,
    Ping,
    Delta(u32),
    BlockStop,
    MessageDelta,
    MessageStop,
}

impl Step {
    fn render(self, api: Api, events: u32, sent_us: u128) -> Bytes {
        if let Api::Responses = api {
            return self.render_responses(events, sent_us);
        }
        let text = match self {
            Step::MessageStart => format!(
                "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1,\"service_tier\":\"standard\"}}}},\"sent_us\":{sent_us}}}\n\n"
            ),
            Step::BlockStart => format!(
                "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}},\"sent_us\":{sent_us}}}\n\n"
            ),
            Step::Ping => format!("event: ping\ndata: {{\"type\":\"ping\",\"sent_us\":{sent_us}}}\n\n"),
            Step::Delta(i) => format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"token {i} \"}},\"sent_us\":{sent_us}}}\n\n"
            ),
            Step::BlockStop => format!(
                "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0,\"sent_us\":{sent_us}}}\n\n"
            ),
            Step::MessageDelta => format!(
                "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}},\"sent_us\":{sent_us}}}\n\n",
                events + 1
            ),
            Step::MessageStop => format!(
                "event: message_stop\ndata: {{\"type\":\"message_stop\",\"sent_us\":{sent_us}}}\n\n"
            ),
        };
        Bytes::from(text)
    }

    /// The same step as a Responses API event.
    fn render_responses(self, events: u32, sent_us: u128) -> Bytes {
        const RESPONSE: &str = r#""id":"resp_mock","object":"response","created_at":1764972100,"model":"gpt-5.3-codex","error":null,"service_tier":"default""#;
        const ITEM: &str = r#""id":"msg_mock","type":"message","role":"assistant""#;
        let (name, body) = match self {
            Step::MessageStart => (
                "response.created",
                format!(r#""response":{{{RESPONSE},"status":"in_progress","output":[]}}"#),
            ),
            Step::BlockStart => (
                "response.output_item.added",
                format!(
                    r#""output_index":0,"item":{{{ITEM},"status":"in_progress","content":[]}}"#
                ),
            ),
            Step::Ping => (
                "response.in_progress",
                format!(r#""response":{{{RESPONSE},"status":"in_progress","output":[]}}"#),
            ),
            Step::Delta(i) => (
                "response.output_text.delta",
                format!(
                    r#""item_id":"msg_mock","output_index":0,"content_index":0,"delta":"token {i} ""#
                ),
            ),
            Step::BlockStop => (
                "response.output_text.done",
                r#""item_id":"msg_mock","output_index":0,"content_index":0"#.to_string(),
            ),
            Step::MessageDelta => (
                "response.output_item.done",
                format!(
                    r#""output_index":0,"item":{{{ITEM},"status":"completed","content":[{{"type":"output_text","annotations":[],"text":"{events} tokens"}}]}}"#
                ),
            ),
            Step::MessageStop => (
                "response.completed",
                format!(
                    r#""response":{{{RESPONSE},"status":"completed","output":[{{{ITEM},"status":"completed","content":[{{"type":"output_text","annotations":[],"text":"{events} tokens"}}]}}],"usage":{{"input_tokens":25,"input_tokens_details":{{"cached_tokens":0}},"output_tokens":{},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}}}}"#,
                    events + 1,
                    events + 26
                ),
            ),
        };
        Bytes::from(format!(
            "event: {name}\ndata: {{\"type\":\"{name}\",{body},\"sent_us\":{sent_us}}}\n\n"
        ))
    }

    /// The step after this one, and whether the gap before it is the configured interval
    /// (only before each delta: the head and tail of a stream go out back to back).
    fn next(self, events: u32) -> Option<(Step, bool)> {
        match self {
            Step::MessageStart => Some((Step::BlockStart, false)),
            Step::BlockStart => Some((Step::Ping, false)),
            Step::Ping if events > 0 => Some((Step::Delta(0), true)),
            Step::Ping => Some((Step::BlockStop, false)),
            Step::Delta(i) if i + 1 < events => Some((Step::Delta(i + 1), true)),
            Step::Delta(_) => Some((Step::BlockStop, false)),
            Step::BlockStop => Some((Step::MessageDelta, false)),
            Step::MessageDelta => Some((Step::MessageStop, false)),
            Step::MessageStop => None,
        }
    }
}

fn sse_response(api: Api, events: u32, interval: Duration) -> HttpResponse {
    // Each delta is due `interval` after the previous one was due (not after it was sent), so
    // a slow client or proxy does not stretch the schedule.
    let start = tokio::time::Instant::now();
    let state = Some((Step::MessageStart, start));
    let body = stream::unfold(state, move |state| async move {
        let (step, due) = state?;
        tokio::time::sleep_until(due).await;
        let chunk = step.render(api, events, unix_micros());
        let next = step
            .next(events)
            .map(|(next, wait)| (next, if wait { due + interval } else { due }));
        Some((Ok::<_, std::convert::Infallible>(chunk), next))
    });
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("request-id", "req_mock_stream"))
        .streaming(body)
}

async fn messages(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let api = Api::of(&req);
    if wants_stream(&req, &body) {
        let events = header_number(&req, "x-mock-events")
            .unwrap_or(DEFAULT_EVENTS)
            .min(MAX_EVENTS);
        let interval_ms = header_number(&req, "x-mock-interval-ms")
            .unwrap_or(DEFAULT_INTERVAL_MS)
            .min(MAX_INTERVAL_MS);
        return sse_response(api, events, Duration::from_millis(interval_ms));
    }
    let answer = match api {
        Api::Messages => MESSAGE_JSON,
        Api::Responses => RESPONSE_JSON,
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header(("request-id", "req_mock_json"))
        .body(Bytes::from_static(answer.as_bytes()))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    eprintln!(
        "mock_upstream listening on {} ({} worker(s), {})",
        args.listen,
        args.workers,
        if args.tls_cert.is_some() {
            "HTTPS"
        } else {
            "HTTP"
        }
    );
    let server = HttpServer::new(|| {
        App::new()
            .app_data(web::PayloadConfig::new(32 * 1024 * 1024))
            .default_service(web::to(messages))
    })
    .workers(args.workers.max(1))
    // Room for the 10,000-stream test to connect in a burst.
    .backlog(16_384)
    .max_connections(100_000)
    .max_connection_rate(100_000)
    .disable_signals();
    match (&args.tls_cert, &args.tls_key) {
        // HTTP/2 puts many answers' small frames on one connection: with Nagle's algorithm on,
        // each would wait for the peer's delayed ACK. (Real API front ends set TCP_NODELAY.)
        (Some(cert), Some(key)) => server
            .tcp_nodelay(true)
            .bind_rustls_0_23(&args.listen, tls_config(cert, key)?)?,
        _ => server.bind(&args.listen)?,
    }
    .run()
    .await
}
