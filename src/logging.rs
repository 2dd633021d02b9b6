//! tracing to stderr (text or JSON lines), one span per request carrying its id, and the
//! `x-request-id` response header. Paths are logged without query strings; header values never.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use std::cell::RefCell;
use std::io::Write;

use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};
use tracing_subscriber::EnvFilter;

/// The most the file watcher's backend logs unless `RUST_LOG` names it.
const NOTIFY_QUIET: &str = "notify=info";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr at `info` unless `RUST_LOG` says otherwise.
pub fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let directives = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
    if !directives.contains("notify") {
        // The file watcher's backend traces every event in the settings directory, including
        // the writes of a log kept there: at `trace` the log would feed itself. Its own
        // target, named in RUST_LOG, still turns it on.
        filter = filter.add_directive(NOTIFY_QUIET.parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(escaped_fields()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The text format's fields, as tracing's default writes them (`name=value`, the message bare),
/// with every control and bidi character escaped (see [`crate::printable`]): a value from a client or an upstream (a `model`, a
/// path, an error message) must never end a log line or start a forged one, nor send terminal
/// escapes. JSON output escapes them already.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use std::fmt::Write as _;
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        if field.name() != "message" {
            write!(writer, "{field}=")?;
        }
        write!(crate::printable::Escaped(writer), "{value:?}")
    })
    .delimited(" ")
}

thread_local! {
    /// Log lines held back on this thread while a batch is being written (see [`batched`]).
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Runs `f`, writing every log line it produces to stderr in one write at the end. The
/// aggregator counts records in batches; one write per batch instead of per line keeps the
/// per-request log event cheap.
pub fn batched<R>(f: impl FnOnce() -> R) -> R {
    HELD.with(|held| *held.borrow_mut() = Some(Vec::with_capacity(16 * 1024)));
    let result = f();
    if let Some(lines) = HELD.with(|held| held.borrow_mut().take()) {
        let _ = std::io::stderr().lock().write_all(&lines);
    }
    result
}

/// stderr, or this thread's held lines while [`batched`] runs.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let held = HELD.with(|held| match held.borrow_mut().as_mut() {
            Some(lines) => {
                lines.extend_from_slice(buf);
                true
            }
            None => false,
        });
        if held {
            Ok(buf.len())
        } else {
            std::io::stderr().write(buf)
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The request span: id, method and path — never the query string or header values.
/// At DEBUG level: with the default INFO filter it costs nothing, and the `sluice::usage` event
/// carries the request id itself.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request.extensions().get::<RequestId>().copied();
        tracing::debug_span!(
            "request",
            request_id = %request_id.map(|id| id.to_string()).unwrap_or_default(),
            method = %request.method(),
            path = %request.path(),
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        if let Ok(response) = outcome {
            span.record("status", response.status().as_u16());
        }
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Returns the request's id as `x-request-id`, so a client report can be matched to our logs.
pub async fn request_id_header(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req.extensions().get::<RequestId>().copied();
    let mut response = next.call(req).await?;
    if let Some(id) = request_id {
        if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let mut out = String::new();
        write!(
            crate::printable::Escaped(&mut out),
            "a\nb\r\u{1b}[2J\0\u{7f}\u{85}\u{2028}é\t"
        )
        .unwrap();
        assert_eq!(out, "a\\nb\\r\\u{1b}[2J\\u{0}\\u{7f}\\u{85}\\u{2028}é\\t");
    }
}
