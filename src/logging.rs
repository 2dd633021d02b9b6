//! tracing to stderr (text or JSON lines), one span per request carrying its id, and the
//! `x-request-id` response header. Paths are logged without query strings; header values never.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Level, Span};
use tracing_actix_web::{RequestId, RootSpanBuilder};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;
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
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match format {
        LogFormat::Text => {
            let subscriber = text_subscriber(filter, || Stderr, ansi, SystemTime);
            if subscriber.try_init().is_ok() && !ansi {
                PLAIN_TEXT.store(true, Ordering::Relaxed);
            }
        }
        LogFormat::Json => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(|| Stderr)
                .with_ansi(ansi)
                .with_target(true)
                .json()
                .flatten_event(true)
                .try_init();
        }
    }
}

/// The text format's subscriber; [`PlainLine`] writes the same bytes when `ansi` is off.
pub(crate) fn text_subscriber<W, T>(
    filter: EnvFilter,
    writer: W,
    ansi: bool,
    timer: T,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    T: FormatTime + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(true)
        .with_timer(timer)
        .fmt_fields(escaped_fields())
        .finish()
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

/// Set once [`init`] installed the text format without colours: then [`write_plain`] may write
/// an event's line itself.
static PLAIN_TEXT: AtomicBool = AtomicBool::new(false);

/// Writes one event's line as the text subscriber of [`init`] writes it without colours, byte for
/// byte, into this thread's held lines (or stderr), without tracing's field visitors and `fmt`
/// machinery: for the one `sluice::usage` event per request. The caller has asked tracing's
/// own filter first (`tracing::event_enabled!` with the event's target, level and field names),
/// so `RUST_LOG` decides as it does for the event.
///
/// Writes nothing and returns false where the subscriber's line would differ: the JSON format,
/// colours on a terminal (both rare, left to tracing), no subscriber of [`init`] (tests), a span
/// entered on this thread (its name would prefix the line), a clock outside the years
/// 1970–9999. The caller then emits the event through tracing.
pub(crate) fn write_plain(
    level: Level,
    target: &str,
    message: &str,
    fields: impl FnOnce(&mut PlainLine),
) -> bool {
    if !PLAIN_TEXT.load(Ordering::Relaxed)
        || tracing::dispatcher::get_default(|current| current.current_span().id().is_some())
    {
        return false;
    }
    let now = std::time::SystemTime::now();
    HELD.with(|held| {
        if let Some(lines) = held.borrow_mut().as_mut() {
            return write_plain_to(lines, now, level, target, message, fields);
        }
        let mut line = Vec::with_capacity(512);
        let written = write_plain_to(&mut line, now, level, target, message, fields);
        if written {
            let _ = std::io::stderr().write_all(&line);
        }
        written
    })
}

/// [`write_plain`]'s line, at `now`, appended to `out`; false (nothing written) for a time
/// outside the years 1970–9999.
pub(crate) fn write_plain_to(
    out: &mut Vec<u8>,
    now: std::time::SystemTime,
    level: Level,
    target: &str,
    message: &str,
    fields: impl FnOnce(&mut PlainLine),
) -> bool {
    let Some(now) = Utc::of(now) else {
        return false;
    };
    let mut line = PlainLine::start(out, &now, level, target, message);
    fields(&mut line);
    line.end();
    true
}

/// One line of the text format, written as tracing's full formatter with [`escaped_fields`]
/// writes it: `<time> <level> <target>: <message> name=value ...`, every value escaped.
pub(crate) struct PlainLine<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> PlainLine<'a> {
    fn start(
        out: &'a mut Vec<u8>,
        now: &Utc,
        level: Level,
        target: &str,
        message: &str,
    ) -> PlainLine<'a> {
        now.push(out);
        // tracing pads the level to five characters, on the left.
        let level = match level {
            Level::TRACE => "TRACE",
            Level::DEBUG => "DEBUG",
            Level::INFO => " INFO",
            Level::WARN => " WARN",
            Level::ERROR => "ERROR",
        };
        out.push(b' ');
        out.extend_from_slice(level.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(crate::printable::escape(message).as_bytes());
        PlainLine { out }
    }

    fn name(&mut self, name: &str) {
        self.out.push(b' ');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'=');
    }

    /// A `%value` field (escaped).
    pub fn str(&mut self, name: &str, value: &str) {
        self.name(name);
        self.out
            .extend_from_slice(crate::printable::escape(value).as_bytes());
    }

    pub fn u64(&mut self, name: &str, value: u64) {
        self.name(name);
        push_u64(self.out, value);
    }

    pub fn bool(&mut self, name: &str, value: bool) {
        self.name(name);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// `value` as `{:?}` writes it. Quick when it is a decimal of at most `decimals` places (as
    /// rounded figures are; `decimals` at most 15): its shortest form is then those digits.
    pub fn f64(&mut self, name: &str, value: f64, decimals: u32) {
        self.name(name);
        if !push_decimal_f64(self.out, value, decimals) {
            let _ = write!(self.out, "{value:?}");
        }
    }

    fn end(self) {
        self.out.push(b'\n');
    }
}

fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `value` digit for digit as `{:?}` writes it, when `value` is the double nearest to a decimal
/// `units / 10^decimals` with `units < 10^15`; false (nothing written) when it is not.
///
/// Why the digits are the decimal's: `{:?}` writes the shortest digits that read back as the
/// same double, and two different decimals of at most 15 significant digits never round to the
/// same double (a double holds 15.95 decimal digits), so no other decimal as short reads back as
/// `value`. Like `{:?}`, values below 1e-4 are written with an exponent (`1.5e-7`), the rest
/// plainly with at least one decimal place (`0.0`, `12.5`); values of 1e16 and up cannot occur.
fn push_decimal_f64(out: &mut Vec<u8>, value: f64, decimals: u32) -> bool {
    const POWERS: [u64; 16] = {
        let mut powers = [1u64; 16];
        let mut at = 1;
        while at < powers.len() {
            powers[at] = powers[at - 1] * 10;
            at += 1;
        }
        powers
    };
    const LIMIT: u64 = POWERS[15];
    let decimals = decimals as usize;
    // Exact: every power of ten up to 10^22 is a double.
    let scale = POWERS[decimals] as f64;
    let scaled = value * scale;
    // Also rules out NaN, the infinities and -0.0 (written `-0.0`).
    if !(value.is_sign_positive() && scaled >= 0.0 && scaled < LIMIT as f64) {
        return false;
    }
    // The nearest whole number (the check below holds it to that).
    let units = (scaled + 0.5) as u64;
    if units as f64 / scale != value {
        return false;
    }
    if units == 0 {
        out.extend_from_slice(b"0.0");
        return true;
    }
    if decimals <= 4 || units >= POWERS[decimals - 4] {
        push_u64(out, units / POWERS[decimals]);
        out.push(b'.');
        let mut fraction = units % POWERS[decimals];
        if fraction == 0 {
            out.push(b'0');
        } else {
            let mut len = decimals;
            while fraction % 10 == 0 {
                fraction /= 10;
                len -= 1;
            }
            // `fraction` has `len` places, leading zeros included.
            let mut digits = [b'0'; 15];
            for digit in digits[..len].iter_mut().rev() {
                *digit = b'0' + (fraction % 10) as u8;
                fraction /= 10;
            }
            out.extend_from_slice(&digits[..len]);
        }
    } else {
        // Below 1e-4: the significant digits, a point after the first, and the exponent.
        let mut significant = units;
        let mut zeros = 0;
        while significant % 10 == 0 {
            significant /= 10;
            zeros += 1;
        }
        let start = out.len();
        push_u64(out, significant);
        let len = out.len() - start;
        if len > 1 {
            out.insert(start + 1, b'.');
        }
        out.extend_from_slice(b"e-");
        push_u64(out, (decimals - (len - 1 + zeros)) as u64);
    }
    true
}

/// A time as tracing's `SystemTime` timer writes it: `2026-12-07T05:18:17.676223Z`.
struct Utc {
    year: u64,
    month: u64,
    day: u64,
    seconds_of_day: u64,
    micros: u64,
}

impl Utc {
    /// `None` before 1970 or after 9999, which tracing writes with a sign.
    fn of(time: std::time::SystemTime) -> Option<Utc> {
        const YEAR_10000: u64 = 253_402_300_800;
        let since_epoch = time.duration_since(std::time::UNIX_EPOCH).ok()?;
        let seconds = since_epoch.as_secs();
        if seconds >= YEAR_10000 {
            return None;
        }
        // Days to a civil date, with years starting on 1 March so that leap days come last.
        let days = seconds / 86_400 + 719_468;
        let era = days / 146_097;
        let day_of_era = days % 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let march_based_month = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * march_based_month + 2) / 5 + 1;
        let month = if march_based_month < 10 {
            march_based_month + 3
        } else {
            march_based_month - 9
        };
        let year = era * 400 + year_of_era + u64::from(month <= 2);
        Some(Utc {
            year,
            month,
            day,
            seconds_of_day: seconds % 86_400,
            micros: u64::from(since_epoch.subsec_micros()),
        })
    }

    fn push(&self, out: &mut Vec<u8>) {
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |end: usize, mut value: u64, width: usize| {
            for digit in text[end - width..end].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(4, self.year, 4);
        put(7, self.month, 2);
        put(10, self.day, 2);
        put(13, self.seconds_of_day / 3_600, 2);
        put(16, self.seconds_of_day / 60 % 60, 2);
        put(19, self.seconds_of_day % 60, 2);
        put(26, self.micros, 6);
        out.extend_from_slice(&text);
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
    use super::*;
    use std::fmt::Write as _;
    use std::time::{Duration, UNIX_EPOCH};

    /// What [`PlainLine::f64`] writes for `value`.
    fn plain_f64(value: f64, decimals: u32) -> String {
        let mut out = Vec::new();
        PlainLine { out: &mut out }.f64("x", value, decimals);
        String::from_utf8(out)
            .unwrap()
            .strip_prefix(" x=")
            .unwrap()
            .to_owned()
    }

    /// A small deterministic generator (xorshift), so that failures repeat.
    fn numbers(mut state: u64) -> impl Iterator<Item = u64> {
        std::iter::repeat_with(move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        })
    }

    #[test]
    fn floats_are_written_as_debug_writes_them() {
        let awkward = [
            0.0,
            -0.0,
            0.1 + 0.2,
            1e-7,
            1.5e-8,
            1e21,
            1e16,
            9_999_999_999_999_998.0,
            123456.789,
            0.0001,
            0.000_099_999,
            2.613006,
            2.6130060000000004,
            1e-9,
            999_999.999_999_999,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            -12.5,
        ];
        for value in awkward {
            for decimals in [0, 3, 9, 15] {
                assert_eq!(
                    plain_f64(value, decimals),
                    format!("{value:?}"),
                    "{value:?}"
                );
            }
        }
        // Milliseconds from whole microseconds, dollars rounded to billionths, as logged.
        for micros in (0..200_000).chain(numbers(7).take(100_000).map(|n| n >> (n % 64))) {
            let ms = micros as f64 / 1000.0;
            assert_eq!(plain_f64(ms, 3), format!("{ms:?}"), "{micros} us");
        }
        for bits in numbers(11).take(100_000) {
            let usd = (bits >> (bits % 64)) as f64 * 1e-12;
            let usd = (usd * 1e9).round() / 1e9;
            assert_eq!(plain_f64(usd, 9), format!("{usd:?}"), "{usd}");
            let any = f64::from_bits(bits);
            assert_eq!(plain_f64(any, 9), format!("{any:?}"));
        }
    }

    #[test]
    fn times_are_written_as_tracing_writes_them() {
        let expected = |time: std::time::SystemTime| {
            let at = jiff::Timestamp::try_from(time).unwrap();
            let civil = jiff::tz::TimeZone::UTC.to_datetime(at);
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                civil.year(),
                civil.month(),
                civil.day(),
                civil.hour(),
                civil.minute(),
                civil.second(),
                civil.subsec_nanosecond() / 1000
            )
        };
        let written = |time| {
            let mut out = Vec::new();
            Utc::of(time).unwrap().push(&mut out);
            String::from_utf8(out).unwrap()
        };
        let days = |days: u64| UNIX_EPOCH + Duration::from_secs(days * 86_400);
        // Leap days, the turns of centuries and of years, the last moment written plainly.
        let mut times = vec![
            UNIX_EPOCH,
            days(59),
            days(10_957 + 59),
            days(10_957 + 60),
            days(47_541 + 58),
            days(47_541 + 59),
        ];
        times.extend(numbers(3).take(100_000).map(|n| {
            UNIX_EPOCH + Duration::new(n % 253_402_207_200, (n >> 34) as u32 % 1_000_000_000)
        }));
        for time in times {
            assert_eq!(written(time), expected(time), "{time:?}");
        }
        // The last moment tracing writes without a sign (past what the reference reads).
        let last = UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999);
        assert_eq!(written(last), "9999-12-31T23:59:59.999999Z");
        assert!(Utc::of(UNIX_EPOCH + Duration::from_secs(253_402_300_800)).is_none());
        assert!(Utc::of(UNIX_EPOCH - Duration::from_secs(1)).is_none());
    }

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
