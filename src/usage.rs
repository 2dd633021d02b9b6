//! Reads token usage out of Anthropic answers as they stream past, in bounded memory.
//!
//! The proxy forwards every byte untouched; a [`UsageParser`] is shown a copy of each chunk and
//! keeps only what metering needs: the `usage` numbers, the `model`, whether the answer finished,
//! and the error type of an error answer.
//!
//! Memory: whatever the answer's size, a parser holds at most [`MAX_BUFFERED_BYTES`].
//! - SSE: only the `data` of the event being read is buffered. Events named `content_block_*` or
//!   `ping` by their `event:` line are not buffered at all (they carry content, never usage). An
//!   event whose `data` grows past the cap is skipped whole, not buffered.
//! - JSON: the body is scanned, not buffered; only the values of the top-level `usage`, `model`
//!   and `error` keys are kept, each up to [`MAX_JSON_VALUE_BYTES`] (a longer one is skipped).
//!
//! Anthropic's usage-bearing events and values are a few hundred bytes, so only content, which
//! metering never needs, runs into these caps. Nothing here panics, whatever the bytes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most bytes a [`UsageParser`] holds at any time, whatever the answer's size.
pub const MAX_BUFFERED_BYTES: usize = 64 * 1024;
/// Most bytes kept of one top-level value of a JSON answer (`usage`, `model`, `error`).
pub const MAX_JSON_VALUE_BYTES: usize = 8 * 1024;
/// Longest `model` or error type kept; longer ones are not names and would bloat the stats.
pub const MAX_NAME_BYTES: usize = 256;

// SSE field names we act on are "data" and "event"; anything longer is ignored unread.
const MAX_FIELD_NAME_BYTES: usize = 16;
const MAX_EVENT_NAME_BYTES: usize = 64;
const MAX_EVENT_DATA_BYTES: usize =
    MAX_BUFFERED_BYTES - MAX_FIELD_NAME_BYTES - MAX_EVENT_NAME_BYTES - 2 * MAX_NAME_BYTES;
// Top-level JSON keys we act on are short; longer keys are skipped unread.
const MAX_JSON_KEY_BYTES: usize = 32;

/// Events that carry content, never usage: their data is not even buffered.
const CONTENT_EVENTS: [&[u8]; 4] = [
    b"content_block_start",
    b"content_block_delta",
    b"content_block_stop",
    b"ping",
];

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Tokens one answer used, as Anthropic reports them. Field names are the `/stats` JSON names.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// `usage.cache_creation.ephemeral_5m_input_tokens`, when the answer gives the split
    /// (`None` = not given, which differs from a given 0 when pricing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_5m_input_tokens: Option<u64>,
    /// `usage.cache_creation.ephemeral_1h_input_tokens`, when the answer gives the split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_1h_input_tokens: Option<u64>,
}

impl Usage {
    /// Overwrites every field the `usage` object gives. Anthropic's numbers are cumulative,
    /// so a later object supersedes an earlier one field by field; absent fields keep their value.
    fn overwrite_from(&mut self, usage: &Value) {
        let count = |value: &Value, name: &str| value.get(name).and_then(Value::as_u64);
        let overwrite = |field: &mut u64, name: &str| {
            if let Some(n) = count(usage, name) {
                *field = n;
            }
        };
        overwrite(&mut self.input_tokens, "input_tokens");
        overwrite(&mut self.output_tokens, "output_tokens");
        overwrite(
            &mut self.cache_creation_input_tokens,
            "cache_creation_input_tokens",
        );
        overwrite(&mut self.cache_read_input_tokens, "cache_read_input_tokens");
        if let Some(split) = usage.get("cache_creation") {
            if let Some(n) = count(split, "ephemeral_5m_input_tokens") {
                self.cache_creation_5m_input_tokens = Some(n);
            }
            if let Some(n) = count(split, "ephemeral_1h_input_tokens") {
                self.cache_creation_1h_input_tokens = Some(n);
            }
        }
    }
}

/// How an answer's body is read, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// `text/event-stream`: a streamed answer.
    EventStream,
    /// `application/json` or any `+json` type: a whole answer or an error.
    Json,
    /// Anything else: nothing is counted and nothing is held.
    Other,
}

impl AnswerFormat {
    /// Media type parameters (`; charset=utf-8`) and case are ignored.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        let Some(content_type) = content_type else {
            return Self::Other;
        };
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        let is_json_suffix = media_type.contains('/')
            && media_type.len() >= 5
            && media_type.as_bytes()[media_type.len() - 5..].eq_ignore_ascii_case(b"+json");
        if media_type.eq_ignore_ascii_case("text/event-stream") {
            Self::EventStream
        } else if media_type.eq_ignore_ascii_case("application/json") || is_json_suffix {
            Self::Json
        } else {
            Self::Other
        }
    }
}

/// What an answer told about itself, as far as it has been read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    pub usage: Usage,
    /// `message_start.message.model` (SSE) or the top-level `model` (JSON).
    pub model: Option<String>,
    /// `message_stop` seen (SSE), or the whole JSON body scanned to its closing brace.
    pub completed: bool,
    /// The `error` event's `error.type` (SSE), or the JSON error body's `error.type`.
    pub error_type: Option<String>,
}

impl Answer {
    fn set_model(&mut self, model: Option<&Value>) {
        if let Some(model) = bounded_name(model) {
            self.model = Some(model);
        }
    }

    fn set_error_type(&mut self, error: Option<&Value>) {
        if let Some(error_type) = bounded_name(error.and_then(|error| error.get("type"))) {
            self.error_type = Some(error_type);
        }
    }

    fn held_bytes(&self) -> usize {
        self.model.as_ref().map_or(0, String::capacity)
            + self.error_type.as_ref().map_or(0, String::capacity)
    }
}

fn bounded_name(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .filter(|name| name.len() <= MAX_NAME_BYTES)
        .map(str::to_owned)
}

/// See [`UsageParser::answer_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerStatus {
    pub completed: bool,
    pub errored: bool,
}

/// Reads one answer's usage from its body chunks, whatever their split, in bounded memory.
#[derive(Debug)]
pub struct UsageParser {
    format: AnswerFormat,
    reader: BodyReader,
    answer: Answer,
    finished: bool,
}

#[derive(Debug)]
enum BodyReader {
    EventStream(EventStreamReader),
    Json(JsonBodyReader),
    Other,
}

impl UsageParser {
    pub fn new(format: AnswerFormat) -> Self {
        let reader = match format {
            AnswerFormat::EventStream => BodyReader::EventStream(EventStreamReader::new()),
            AnswerFormat::Json => BodyReader::Json(JsonBodyReader::new()),
            AnswerFormat::Other => BodyReader::Other,
        };
        Self {
            format,
            reader,
            answer: Answer::default(),
            finished: false,
        }
    }

    /// Takes the next chunk of the body as it came off the network. Ignored after [`finish`].
    ///
    /// [`finish`]: Self::finish
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.finished {
            return;
        }
        match &mut self.reader {
            BodyReader::EventStream(reader) => reader.feed(chunk, &mut self.answer),
            BodyReader::Json(reader) => reader.feed(chunk, &mut self.answer),
            BodyReader::Other => {}
        }
    }

    /// Ends the body, whether it ended normally or was cut short, and tells what was learned.
    /// A last SSE event that lacks its closing blank line still counts: its bytes were sent.
    pub fn finish(&mut self) -> Answer {
        if !self.finished {
            self.finished = true;
            if let BodyReader::EventStream(reader) = &mut self.reader {
                reader.finish(&mut self.answer);
            }
            self.reader = BodyReader::Other; // nothing more to read: release the buffers
        }
        self.answer.clone()
    }

    /// What is known so far.
    pub fn answer(&self) -> Answer {
        self.answer.clone()
    }

    /// The model read so far, without copying the whole answer.
    pub fn answer_model(&self) -> Option<&str> {
        self.answer.model.as_deref()
    }

    /// True for event streams and JSON: answers whose own end can be recognised.
    pub fn reads_answers(&self) -> bool {
        self.format != AnswerFormat::Other
    }

    /// Whether the answer has reached its own end so far, or reported an error.
    pub fn answer_status(&self) -> AnswerStatus {
        AnswerStatus {
            completed: self.answer.completed,
            errored: self.answer.error_type.is_some(),
        }
    }

    /// Bytes this parser holds now; never more than [`MAX_BUFFERED_BYTES`].
    pub fn buffered_bytes(&self) -> usize {
        let reader = match &self.reader {
            BodyReader::EventStream(reader) => reader.held_bytes(),
            BodyReader::Json(reader) => reader.held_bytes(),
            BodyReader::Other => 0,
        };
        reader + self.answer.held_bytes()
    }
}

/// A byte buffer that refuses to grow past its cap: on overflow it drops what it held and
/// remembers that it overflowed, so the caller skips the value instead of reading half of it.
#[derive(Debug)]
struct BoundedBuffer {
    bytes: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl BoundedBuffer {
    const fn new(cap: usize) -> Self {
        Self {
            bytes: Vec::new(),
            cap,
            overflowed: false,
        }
    }

    fn push(&mut self, more: &[u8]) {
        if self.overflowed || more.is_empty() {
            return;
        }
        let needed = self.bytes.len() + more.len();
        if needed > self.cap {
            self.overflowed = true;
            self.bytes = Vec::new();
            return;
        }
        if needed > self.bytes.capacity() {
            // Double as Vec would, but never past the cap, so capacity too stays bounded.
            let target = needed.max(self.bytes.capacity() * 2).min(self.cap);
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        self.bytes.extend_from_slice(more);
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.overflowed = false;
    }

    /// Holds something, or held something that overflowed.
    fn is_used(&self) -> bool {
        !self.bytes.is_empty() || self.overflowed
    }

    /// The complete contents, or `None` when they overflowed.
    fn contents(&self) -> Option<&[u8]> {
        (!self.overflowed).then_some(self.bytes.as_slice())
    }

    fn held_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}

/// Which SSE field the current line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SseField {
    Data,
    Event,
    /// Comments, `id`, `retry`, unknown fields, and data nobody needs.
    Ignored,
}

/// Where the reader is within the current SSE line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SseLinePhase {
    FieldName,
    /// Just after the colon: one leading space is not part of the value.
    ValueStart(SseField),
    Value(SseField),
}

/// An SSE reader after the WHATWG event-stream rules, fed bytes rather than lines, so that no
/// line is ever held whole: field values stream straight into the buffer that wants them.
#[derive(Debug)]
struct EventStreamReader {
    phase: SseLinePhase,
    field_name: BoundedBuffer,
    /// The previous byte was `\r`: a `\n` right after it ends no second line.
    after_cr: bool,
    /// No line has ended yet (a UTF-8 BOM may only stand at the very start).
    on_first_line: bool,
    event_name: BoundedBuffer,
    data: BoundedBuffer,
    /// A `data` field was seen in the event being read.
    has_data: bool,
}

impl EventStreamReader {
    const fn new() -> Self {
        Self {
            phase: SseLinePhase::FieldName,
            field_name: BoundedBuffer::new(MAX_FIELD_NAME_BYTES),
            after_cr: false,
            on_first_line: true,
            event_name: BoundedBuffer::new(MAX_EVENT_NAME_BYTES),
            data: BoundedBuffer::new(MAX_EVENT_DATA_BYTES),
            has_data: false,
        }
    }

    fn feed(&mut self, mut bytes: &[u8], answer: &mut Answer) {
        while let Some(&first) = bytes.first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.read_line_part(&bytes[..end]);
                    self.after_cr = bytes[end] == b'\r';
                    self.end_line(answer);
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.read_line_part(bytes);
                    break;
                }
            }
        }
    }

    fn finish(&mut self, answer: &mut Answer) {
        if self.phase != SseLinePhase::FieldName || self.field_name.is_used() {
            self.end_line(answer);
        }
        self.dispatch(answer);
    }

    /// Reads bytes of the current line (no line end among them).
    fn read_line_part(&mut self, mut part: &[u8]) {
        while !part.is_empty() {
            match self.phase {
                SseLinePhase::FieldName => match part.iter().position(|&b| b == b':') {
                    Some(colon) => {
                        self.field_name.push(&part[..colon]);
                        self.phase = SseLinePhase::ValueStart(self.take_field());
                        part = &part[colon + 1..];
                    }
                    None => {
                        self.field_name.push(part);
                        return;
                    }
                },
                SseLinePhase::ValueStart(field) => {
                    if part[0] == b' ' {
                        part = &part[1..];
                    }
                    self.phase = SseLinePhase::Value(field);
                }
                SseLinePhase::Value(field) => {
                    match field {
                        SseField::Data => self.data.push(part),
                        SseField::Event => self.event_name.push(part),
                        SseField::Ignored => {}
                    }
                    return;
                }
            }
        }
    }

    fn end_line(&mut self, answer: &mut Answer) {
        match self.phase {
            SseLinePhase::FieldName if !self.field_name.is_used() => self.dispatch(answer),
            // A line without a colon is a field name with an empty value.
            SseLinePhase::FieldName => {
                let field = self.take_field();
                self.end_field(field);
            }
            SseLinePhase::ValueStart(field) | SseLinePhase::Value(field) => self.end_field(field),
        }
        self.phase = SseLinePhase::FieldName;
        self.on_first_line = false;
    }

    fn end_field(&mut self, field: SseField) {
        if field == SseField::Data {
            self.data.push(b"\n");
        }
    }

    /// Decides which field the collected name is, and gets ready for its value.
    fn take_field(&mut self) -> SseField {
        let name = self.field_name.contents().map(|name| {
            if self.on_first_line {
                name.strip_prefix(UTF8_BOM).unwrap_or(name)
            } else {
                name
            }
        });
        let field = match name {
            Some(b"data") => {
                self.has_data = true;
                if self.is_content_event() {
                    SseField::Ignored
                } else {
                    SseField::Data
                }
            }
            Some(b"event") => {
                self.event_name.clear();
                SseField::Event
            }
            // Comments (empty name), `id`, `retry`, unknown and over-long names.
            _ => SseField::Ignored,
        };
        self.field_name.clear();
        field
    }

    fn is_content_event(&self) -> bool {
        self.event_name
            .contents()
            .is_some_and(|name| CONTENT_EVENTS.contains(&name))
    }

    /// A blank line ends the event: read it if it may carry usage, then start afresh.
    fn dispatch(&mut self, answer: &mut Answer) {
        if self.has_data && !self.is_content_event() {
            if let Some(data) = self.data.contents() {
                let data = data.strip_suffix(b"\n").unwrap_or(data);
                if let Ok(data) = serde_json::from_slice::<Value>(data) {
                    let event_name = self.event_name.contents().unwrap_or_default();
                    read_event(event_name, &data, answer);
                }
            }
        }
        self.data.clear();
        self.event_name.clear();
        self.has_data = false;
    }

    fn held_bytes(&self) -> usize {
        self.field_name.held_bytes() + self.event_name.held_bytes() + self.data.held_bytes()
    }
}

/// Applies one SSE event, named by its data's `type` or else by its `event:` line.
fn read_event(event_name: &[u8], data: &Value, answer: &mut Answer) {
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .map_or(event_name, str::as_bytes);
    match kind {
        b"message_start" => {
            if let Some(message) = data.get("message") {
                answer.set_model(message.get("model"));
                if let Some(usage) = message.get("usage") {
                    answer.usage.overwrite_from(usage);
                }
            }
        }
        b"message_delta" => {
            if let Some(usage) = data.get("usage") {
                answer.usage.overwrite_from(usage);
            }
        }
        b"message_stop" => answer.completed = true,
        b"error" => answer.set_error_type(data.get("error")),
        _ => {}
    }
}

/// The top-level keys of a JSON answer that metering reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WantedKey {
    Usage,
    Model,
    Error,
}

/// The shape of the top-level value being scanned, which decides where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonValueShape {
    /// An object or array: ends at its matching close.
    Container,
    /// Ends at its closing quote.
    String,
    /// A number, `true`, `false` or `null`: ends before the next delimiter.
    Bare,
}

/// Where the scanner is within the top-level object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonPhase {
    BeforeBody,
    FirstKey,
    NextKey,
    Key,
    BeforeColon,
    BeforeValue,
    Value(JsonValueShape),
    AfterValue,
    /// The top-level object closed: the body is complete.
    Done,
    /// Not a JSON object, or broken: nothing more is read.
    Unreadable,
}

/// Scans a JSON body once, byte by byte, tracking depth, strings and escapes, and keeps only
/// the top-level values metering needs; they are parsed with serde_json as each one ends.
#[derive(Debug)]
struct JsonBodyReader {
    phase: JsonPhase,
    key: BoundedBuffer,
    wanted: Option<WantedKey>,
    value: BoundedBuffer,
    /// Open objects and arrays inside the current value.
    nesting: u64,
    in_string: bool,
    escaped: bool,
}

impl JsonBodyReader {
    const fn new() -> Self {
        Self {
            phase: JsonPhase::BeforeBody,
            key: BoundedBuffer::new(MAX_JSON_KEY_BYTES),
            wanted: None,
            value: BoundedBuffer::new(MAX_JSON_VALUE_BYTES),
            nesting: 0,
            in_string: false,
            escaped: false,
        }
    }

    fn feed(&mut self, bytes: &[u8], answer: &mut Answer) {
        let mut at = 0;
        while at < bytes.len() {
            at += match self.phase {
                JsonPhase::Key => self.read_key(&bytes[at..]),
                JsonPhase::Value(shape) => self.read_value(shape, &bytes[at..], answer),
                JsonPhase::Unreadable => return,
                _ => {
                    self.read_structure(bytes[at], answer);
                    1
                }
            };
        }
    }

    /// One byte between keys and values: whitespace, `{`, `:`, `,`, `}` or a value's start.
    fn read_structure(&mut self, byte: u8, answer: &mut Answer) {
        if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            return;
        }
        self.phase = match (self.phase, byte) {
            (JsonPhase::BeforeBody, b'{') => JsonPhase::FirstKey,
            (JsonPhase::FirstKey | JsonPhase::NextKey, b'"') => {
                self.key.clear();
                self.escaped = false;
                JsonPhase::Key
            }
            (JsonPhase::FirstKey | JsonPhase::AfterValue, b'}') => {
                answer.completed = true;
                JsonPhase::Done
            }
            (JsonPhase::BeforeColon, b':') => JsonPhase::BeforeValue,
            (JsonPhase::BeforeValue, b',' | b':' | b'}' | b']') => JsonPhase::Unreadable,
            (JsonPhase::BeforeValue, _) => self.start_value(byte),
            (JsonPhase::AfterValue, b',') => JsonPhase::NextKey,
            (JsonPhase::Done, _) => {
                answer.completed = false; // trailing bytes: not one JSON document after all
                JsonPhase::Unreadable
            }
            _ => JsonPhase::Unreadable,
        };
    }

    /// Reads key bytes up to the closing quote; returns how many bytes it used.
    fn read_key(&mut self, bytes: &[u8]) -> usize {
        let (used, closed) = scan_string(bytes, &mut self.escaped);
        self.key.push(&bytes[..used - usize::from(closed)]);
        if closed {
            self.wanted = self.key.contents().and_then(wanted_key);
            self.phase = JsonPhase::BeforeColon;
        }
        used
    }

    fn start_value(&mut self, first: u8) -> JsonPhase {
        self.value.clear();
        if self.wanted.is_some() {
            self.value.push(&[first]);
        }
        self.escaped = false;
        self.in_string = false;
        self.nesting = 1;
        JsonPhase::Value(match first {
            b'{' | b'[' => JsonValueShape::Container,
            b'"' => JsonValueShape::String,
            _ => JsonValueShape::Bare,
        })
    }

    /// Reads value bytes up to the value's end; returns how many bytes it used.
    fn read_value(&mut self, shape: JsonValueShape, bytes: &[u8], answer: &mut Answer) -> usize {
        let (used, ended) = match shape {
            JsonValueShape::Container => self.scan_container(bytes),
            JsonValueShape::String => scan_string(bytes, &mut self.escaped),
            JsonValueShape::Bare => match bytes
                .iter()
                .position(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}' | b']'))
            {
                // The delimiter is not part of the value: leave it for `read_structure`.
                Some(end) => (end, true),
                None => (bytes.len(), false),
            },
        };
        if self.wanted.is_some() {
            self.value.push(&bytes[..used]);
        }
        if ended {
            self.end_value(answer);
            self.phase = JsonPhase::AfterValue;
        }
        used
    }

    fn scan_container(&mut self, bytes: &[u8]) -> (usize, bool) {
        for (at, &byte) in bytes.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.nesting = self.nesting.saturating_add(1),
                b'}' | b']' => {
                    self.nesting -= 1;
                    if self.nesting == 0 {
                        return (at + 1, true);
                    }
                }
                _ => {}
            }
        }
        (bytes.len(), false)
    }

    fn end_value(&mut self, answer: &mut Answer) {
        let Some(wanted) = self.wanted.take() else {
            return;
        };
        let Some(value) = self
            .value
            .contents()
            .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
        else {
            return;
        };
        match wanted {
            WantedKey::Usage => answer.usage.overwrite_from(&value),
            WantedKey::Model => answer.set_model(Some(&value)),
            WantedKey::Error => answer.set_error_type(Some(&value)),
        }
    }

    fn held_bytes(&self) -> usize {
        self.key.held_bytes() + self.value.held_bytes()
    }
}

/// Advances through a JSON string's content; returns the bytes used (closing quote included)
/// and whether the string closed.
fn scan_string(bytes: &[u8], escaped: &mut bool) -> (usize, bool) {
    for (at, &byte) in bytes.iter().enumerate() {
        if *escaped {
            *escaped = false;
        } else if byte == b'\\' {
            *escaped = true;
        } else if byte == b'"' {
            return (at + 1, true);
        }
    }
    (bytes.len(), false)
}

/// Names the key from its raw bytes (between the quotes), decoding escapes if it has any.
fn wanted_key(raw: &[u8]) -> Option<WantedKey> {
    let decoded;
    let key = if raw.contains(&b'\\') {
        let mut quoted = Vec::with_capacity(raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(raw);
        quoted.push(b'"');
        decoded = serde_json::from_slice::<String>(&quoted).ok()?;
        decoded.as_bytes()
    } else {
        raw
    };
    match key {
        b"usage" => Some(WantedKey::Usage),
        b"model" => Some(WantedKey::Model),
        b"error" => Some(WantedKey::Error),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/anthropic/");

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{FIXTURES}{name}");
        std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
    }

    /// The body of a recorded HTTP response: everything after the blank line ending the head.
    fn body_of(response: &[u8]) -> Vec<u8> {
        let head_end = response
            .windows(2)
            .position(|pair| pair == b"\n\n")
            .expect("response sample has a blank line after its head");
        response[head_end + 2..].to_vec()
    }

    struct FixtureAnswer {
        name: &'static str,
        format: AnswerFormat,
        body: Vec<u8>,
        expected: Answer,
    }

    /// Every answer among the fixtures, with what it says, worked out by hand from the file.
    fn fixture_answers() -> Vec<FixtureAnswer> {
        vec![
            FixtureAnswer {
                name: "stream-text.sse",
                format: AnswerFormat::EventStream,
                body: fixture("stream-text.sse"),
                expected: Answer {
                    usage: Usage {
                        input_tokens: 849,
                        output_tokens: 47,
                        cache_creation_input_tokens: 120,
                        cache_read_input_tokens: 3000,
                        cache_creation_5m_input_tokens: Some(120),
                        cache_creation_1h_input_tokens: Some(0),
                    },
                    model: Some("claude-haiku-4-5-20251001".into()),
                    completed: true,
                    error_type: None,
                },
            },
            FixtureAnswer {
                name: "stream-tool-use.sse",
                format: AnswerFormat::EventStream,
                body: fixture("stream-tool-use.sse"),
                expected: Answer {
                    usage: Usage {
                        input_tokens: 2210,
                        output_tokens: 95,
                        cache_creation_input_tokens: 0,
                        cache_read_input_tokens: 18000,
                        cache_creation_5m_input_tokens: None,
                        cache_creation_1h_input_tokens: None,
                    },
                    model: Some("claude-sonnet-4-5-20250929".into()),
                    completed: true,
                    error_type: None,
                },
            },
            FixtureAnswer {
                name: "stream-error-midway.sse",
                format: AnswerFormat::EventStream,
                body: fixture("stream-error-midway.sse"),
                expected: Answer {
                    usage: Usage {
                        input_tokens: 500,
                        output_tokens: 1,
                        ..Usage::default()
                    },
                    model: Some("claude-opus-4-5".into()),
                    completed: false,
                    error_type: Some("overloaded_error".into()),
                },
            },
            FixtureAnswer {
                name: "message.json",
                format: AnswerFormat::Json,
                body: fixture("message.json"),
                expected: Answer {
                    usage: Usage {
                        input_tokens: 12,
                        output_tokens: 10,
                        cache_creation_input_tokens: 0,
                        cache_read_input_tokens: 0,
                        cache_creation_5m_input_tokens: Some(0),
                        cache_creation_1h_input_tokens: Some(0),
                    },
                    model: Some("claude-sonnet-4-5-20250929".into()),
                    completed: true,
                    error_type: None,
                },
            },
            FixtureAnswer {
                name: "ratelimit-429.headers",
                format: AnswerFormat::Json,
                body: body_of(&fixture("ratelimit-429.headers")),
                expected: Answer {
                    usage: Usage::default(),
                    model: None,
                    completed: true,
                    error_type: Some("rate_limit_error".into()),
                },
            },
        ]
    }

    /// Feeds the chunks one by one, checking the memory bound after each, then finishes.
    fn read_chunks<'a>(format: AnswerFormat, chunks: impl IntoIterator<Item = &'a [u8]>) -> Answer {
        let mut parser = UsageParser::new(format);
        for chunk in chunks {
            parser.feed(chunk);
            assert!(parser.buffered_bytes() <= MAX_BUFFERED_BYTES);
        }
        parser.finish()
    }

    fn read_whole(format: AnswerFormat, body: &[u8]) -> Answer {
        read_chunks(format, [body])
    }

    /// Cuts the body at the given offsets (any order, repeats allowed) and feeds the pieces.
    fn read_cut_at(format: AnswerFormat, body: &[u8], cuts: &[usize]) -> Answer {
        let mut cuts: Vec<usize> = cuts.iter().map(|&cut| cut.min(body.len())).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::with_capacity(cuts.len() + 1);
        let mut start = 0;
        for cut in cuts {
            pieces.push(&body[start..cut]);
            start = cut;
        }
        pieces.push(&body[start..]);
        read_chunks(format, pieces)
    }

    fn replace_line_ends(body: &[u8], line_end: &[u8]) -> Vec<u8> {
        let mut replaced = Vec::with_capacity(body.len() * 2);
        for &byte in body {
            if byte == b'\n' {
                replaced.extend_from_slice(line_end);
            } else {
                replaced.push(byte);
            }
        }
        replaced
    }

    fn event(name: Option<&str>, data: &str) -> String {
        let name_line = name
            .map(|name| format!("event: {name}\n"))
            .unwrap_or_default();
        format!("{name_line}data: {data}\n\n")
    }

    fn read_stream(stream: &str) -> Answer {
        read_whole(AnswerFormat::EventStream, stream.as_bytes())
    }

    fn read_json(body: &str) -> Answer {
        read_whole(AnswerFormat::Json, body.as_bytes())
    }

    const MESSAGE_START: &str = r#"{"type":"message_start","message":{"model":"claude-sonnet-4-5","usage":{"input_tokens":10,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":1}}}"#;

    fn usage(input: u64, output: u64, cache_creation: u64, cache_read: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: cache_creation,
            cache_read_input_tokens: cache_read,
            ..Usage::default()
        }
    }

    #[test]
    fn every_fixture_read_whole_gives_its_expected_answer() {
        for answer in fixture_answers() {
            assert_eq!(
                read_whole(answer.format, &answer.body),
                answer.expected,
                "{}",
                answer.name
            );
        }
    }

    #[test]
    fn every_fixture_split_in_two_at_every_offset_gives_the_same_answer() {
        for answer in fixture_answers() {
            for cut in 0..=answer.body.len() {
                assert_eq!(
                    read_cut_at(answer.format, &answer.body, &[cut]),
                    answer.expected,
                    "{} cut at {cut}",
                    answer.name
                );
            }
        }
    }

    #[test]
    fn every_fixture_in_one_byte_chunks_gives_the_same_answer() {
        for answer in fixture_answers() {
            let bytes = answer.body.chunks(1);
            assert_eq!(
                read_chunks(answer.format, bytes),
                answer.expected,
                "{}",
                answer.name
            );
        }
    }

    #[test]
    fn every_fixture_with_crlf_line_ends_gives_the_same_answer() {
        for answer in fixture_answers() {
            let body = replace_line_ends(&answer.body, b"\r\n");
            assert_eq!(
                read_whole(answer.format, &body),
                answer.expected,
                "{}",
                answer.name
            );
            // A chunk may end between the \r and the \n.
            for cut in 0..=body.len() {
                assert_eq!(
                    read_cut_at(answer.format, &body, &[cut]),
                    answer.expected,
                    "{} with CRLF cut at {cut}",
                    answer.name
                );
            }
        }
    }

    #[test]
    fn every_fixture_with_cr_line_ends_gives_the_same_answer() {
        for answer in fixture_answers() {
            let body = replace_line_ends(&answer.body, b"\r");
            let bytes = body.chunks(1);
            assert_eq!(
                read_chunks(answer.format, bytes),
                answer.expected,
                "{}",
                answer.name
            );
        }
    }

    #[test]
    fn tool_use_stream_takes_cumulative_message_delta_usage() {
        let answer = read_whole(AnswerFormat::EventStream, &fixture("stream-tool-use.sse"));
        assert_eq!(answer.usage.output_tokens, 95);
        assert_eq!(answer.usage.input_tokens, 2210);
        assert_eq!(answer.usage.cache_read_input_tokens, 18000);
        assert_eq!(answer.usage.cache_creation_input_tokens, 0);
    }

    #[test]
    fn message_delta_overwrites_only_the_fields_it_gives() {
        let stream = [
            event(Some("message_start"), MESSAGE_START),
            event(
                Some("message_delta"),
                r#"{"type":"message_delta","usage":{"output_tokens":5,"cache_read_input_tokens":31}}"#,
            ),
            event(
                Some("message_delta"),
                r#"{"type":"message_delta","usage":{"output_tokens":9,"cache_creation":{"ephemeral_1h_input_tokens":20}}}"#,
            ),
        ]
        .concat();
        let answer = read_stream(&stream);
        assert_eq!(
            answer.usage,
            Usage {
                cache_creation_1h_input_tokens: Some(20),
                ..usage(10, 9, 20, 31)
            }
        );
        assert!(!answer.completed);
    }

    #[test]
    fn null_or_malformed_usage_numbers_leave_the_field_as_it_was() {
        let stream = [
            event(Some("message_start"), MESSAGE_START),
            event(
                Some("message_delta"),
                r#"{"type":"message_delta","usage":{"input_tokens":null,"output_tokens":-3,"cache_read_input_tokens":"7","cache_creation_input_tokens":2.5,"cache_creation":null}}"#,
            ),
        ]
        .concat();
        assert_eq!(read_stream(&stream).usage, usage(10, 1, 20, 30));
    }

    #[test]
    fn error_event_midstream_keeps_the_tokens_seen() {
        let stream = [
            event(Some("message_start"), MESSAGE_START),
            event(
                Some("error"),
                r#"{"type":"error","error":{"type":"api_error","message":"Internal"}}"#,
            ),
        ]
        .concat();
        let answer = read_stream(&stream);
        assert_eq!(answer.usage, usage(10, 1, 20, 30));
        assert_eq!(answer.error_type.as_deref(), Some("api_error"));
        assert!(!answer.completed);
    }

    #[test]
    fn multi_line_data_is_joined_with_line_feeds() {
        let stream = "event: message_start\n\
                      data: {\"type\":\"message_start\",\n\
                      data: \"message\":{\"model\":\"claude-x\",\n\
                      data:\"usage\":{\"input_tokens\":4}}}\n\n";
        let answer = read_stream(stream);
        assert_eq!(answer.usage.input_tokens, 4);
        assert_eq!(answer.model.as_deref(), Some("claude-x"));
    }

    #[test]
    fn comments_unknown_fields_and_unknown_events_are_ignored() {
        let stream = [
            ": keep-alive comment\n\n".to_string(),
            "id: 7\nretry: 1000\nfoo: bar\nnocolon\n\n".to_string(),
            event(Some("message_start"), MESSAGE_START),
            event(
                Some("brand_new_event"),
                r#"{"type":"brand_new_event","usage":{"input_tokens":999}}"#,
            ),
            event(Some("ping"), r#"{"type": "ping"}"#),
            ":\n".to_string(),
            event(Some("message_stop"), r#"{"type":"message_stop"}"#),
        ]
        .concat();
        let answer = read_stream(&stream);
        assert_eq!(answer.usage, usage(10, 1, 20, 30));
        assert!(answer.completed);
    }

    #[test]
    fn event_without_event_line_is_named_by_its_data_type() {
        let stream = [
            event(None, MESSAGE_START),
            event(
                None,
                r#"{"type":"message_delta","usage":{"output_tokens":12}}"#,
            ),
            event(None, r#"{"type":"message_stop"}"#),
        ]
        .concat();
        let answer = read_stream(&stream);
        assert_eq!(answer.usage, usage(10, 12, 20, 30));
        assert!(answer.completed);
    }

    #[test]
    fn event_line_names_an_event_whose_data_has_no_type() {
        let stream = [
            event(Some("message_start"), MESSAGE_START),
            event(Some("message_delta"), r#"{"usage":{"output_tokens":12}}"#),
            event(Some("message_stop"), "{}"),
        ]
        .concat();
        let answer = read_stream(&stream);
        assert_eq!(answer.usage.output_tokens, 12);
        assert!(answer.completed);
    }

    #[test]
    fn each_line_end_style_ends_one_line_not_two() {
        // The data has no "type", so the event name must survive: a CRLF read as two line
        // ends would end the event between its name and its data.
        let stream = format!(
            "event: message_start\ndata: {MESSAGE_START}\n\n\
             event: message_delta\ndata: {{\"usage\":\ndata: {{\"output_tokens\":12}}}}\n\n"
        );
        for line_end in [&b"\r\n"[..], b"\r", b"\n"] {
            let body = replace_line_ends(stream.as_bytes(), line_end);
            for cut in 0..=body.len() {
                let answer = read_cut_at(AnswerFormat::EventStream, &body, &[cut]);
                assert_eq!(
                    answer.usage,
                    usage(10, 12, 20, 30),
                    "{line_end:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn data_may_come_before_the_event_line() {
        let stream = format!(
            "data: {MESSAGE_START}\nevent: message_start\n\n\
             data: {{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":3}}}}\nevent: message_delta\n\n"
        );
        assert_eq!(read_stream(&stream).usage, usage(10, 3, 20, 30));
    }

    #[test]
    fn truncated_stream_counts_the_tokens_seen_and_is_not_completed() {
        let body = fixture("stream-text.sse");
        let cut = body
            .windows(b"event: message_delta".len())
            .position(|window| window == b"event: message_delta")
            .unwrap();
        let answer = read_whole(AnswerFormat::EventStream, &body[..cut + 40]);
        assert_eq!(answer.usage.output_tokens, 10);
        assert_eq!(answer.usage.input_tokens, 849);
        assert!(!answer.completed);
    }

    #[test]
    fn last_event_without_its_blank_line_still_counts() {
        let stream = format!(
            "{}event: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":8}}}}",
            event(Some("message_start"), MESSAGE_START)
        );
        assert_eq!(read_stream(&stream).usage.output_tokens, 8);
    }

    #[test]
    fn garbage_and_non_utf8_bytes_count_nothing() {
        let inputs: [&[u8]; 5] = [
            b"\xff\xfe\x00garbage\n\n\xc3\x28data: \xa0\xa1\n\n",
            b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":\xff}}}\n\n",
            b"event: message_start\ndata: not json\n\n",
            b"HTTP/1.1 200 OK\r\n\r\n<html></html>",
            b"",
        ];
        for input in inputs {
            for format in [AnswerFormat::EventStream, AnswerFormat::Json] {
                assert_eq!(read_whole(format, input), Answer::default(), "{input:?}");
            }
        }
    }

    #[test]
    fn garbage_between_events_does_not_spoil_the_ones_around_it() {
        let stream = format!(
            "{}\u{1}\u{7f}junk line\n\n{}",
            event(Some("message_start"), MESSAGE_START),
            event(None, r#"{"type":"message_stop"}"#)
        );
        let answer = read_stream(&stream);
        assert_eq!(answer.usage.input_tokens, 10);
        assert!(answer.completed);
    }

    #[test]
    fn byte_order_mark_at_stream_start_is_ignored() {
        let stream = format!("\u{feff}{}", event(Some("message_start"), MESSAGE_START));
        for cut in 0..8 {
            let answer = read_cut_at(AnswerFormat::EventStream, stream.as_bytes(), &[cut]);
            assert_eq!(answer.model.as_deref(), Some("claude-sonnet-4-5"));
        }
    }

    fn huge_text_delta() -> String {
        let text = "lorem \\\"ipsum\\\" {[ ".repeat(6 * 1024); // 114 KiB: past the cap
        format!(
            r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{text}"}}}}"#
        )
    }

    /// A 5 MB streamed answer: usage before and after 50 content deltas of 100 KiB each.
    fn huge_stream(named_events: bool) -> Vec<u8> {
        let name = |name| named_events.then_some(name);
        let delta = event(name("content_block_delta"), &huge_text_delta());
        let mut stream = event(name("message_start"), MESSAGE_START);
        stream.push_str(&delta.repeat(50));
        stream.push_str(&event(
            name("message_delta"),
            r#"{"type":"message_delta","usage":{"output_tokens":4321}}"#,
        ));
        stream.push_str(&event(name("message_stop"), r#"{"type":"message_stop"}"#));
        assert!(stream.len() > 5_000_000);
        stream.into_bytes()
    }

    #[test]
    fn huge_streamed_answer_is_read_within_the_memory_cap() {
        for named_events in [true, false] {
            let stream = huge_stream(named_events);
            let mut parser = UsageParser::new(AnswerFormat::EventStream);
            let mut most_held = 0;
            for chunk in stream.chunks(16 * 1024 + 7) {
                parser.feed(chunk);
                most_held = most_held.max(parser.buffered_bytes());
            }
            let answer = parser.finish();
            assert_eq!(answer.usage, usage(10, 4321, 20, 30));
            assert!(answer.completed);
            assert!(most_held <= MAX_BUFFERED_BYTES, "held {most_held} bytes");
            if named_events {
                // Named content events are not buffered at all.
                assert!(most_held < 1024, "held {most_held} bytes");
            }
        }
    }

    #[test]
    fn usage_event_longer_than_the_cap_is_skipped_whole() {
        let padded_delta = format!(
            r#"{{"type":"message_delta","padding":"{}","usage":{{"output_tokens":77}}}}"#,
            "x".repeat(MAX_BUFFERED_BYTES)
        );
        let stream = [
            event(Some("message_start"), MESSAGE_START),
            event(Some("message_delta"), &padded_delta),
        ]
        .concat();
        assert_eq!(read_stream(&stream).usage.output_tokens, 1);
    }

    #[test]
    fn huge_json_answer_is_read_within_the_memory_cap() {
        let text = "say \\\"usage\\\": {\\\"input_tokens\\\": 1} [{ ".repeat(128 * 1024);
        let body = format!(
            r#"{{"id":"msg_1","type":"message","model":"claude-opus-4-5","content":[{{"type":"text","text":"{text}"}}],"stop_reason":"end_turn","usage":{{"input_tokens":7,"output_tokens":90000,"cache_creation_input_tokens":5,"cache_read_input_tokens":6}}}}"#
        );
        assert!(body.len() > 5_000_000);
        let mut parser = UsageParser::new(AnswerFormat::Json);
        let mut most_held = 0;
        for chunk in body.as_bytes().chunks(7 * 1024 + 3) {
            parser.feed(chunk);
            most_held = most_held.max(parser.buffered_bytes());
        }
        let answer = parser.finish();
        assert_eq!(answer.usage, usage(7, 90000, 5, 6));
        assert_eq!(answer.model.as_deref(), Some("claude-opus-4-5"));
        assert!(answer.completed);
        assert!(most_held <= MAX_BUFFERED_BYTES, "held {most_held} bytes");
    }

    #[test]
    fn json_keys_below_the_top_level_are_not_read() {
        let body = r#"{"content":[{"type":"tool_use","input":{"usage":{"input_tokens":999},"model":"fake","error":{"type":"fake"}}}],"model":"claude-real","usage":{"input_tokens":3,"output_tokens":4}}"#;
        let answer = read_json(body);
        assert_eq!(answer.usage, usage(3, 4, 0, 0));
        assert_eq!(answer.model.as_deref(), Some("claude-real"));
        assert_eq!(answer.error_type, None);
        assert!(answer.completed);
    }

    #[test]
    fn json_strings_may_hold_quotes_braces_and_key_lookalikes() {
        let body = r#"{"text":"\"usage\":{\"input_tokens\":9}}\\","weird\"key":{"usage":"}"},"model":"m\u0031","usage":{"input_tokens":1}}"#;
        let answer = read_json(body);
        assert_eq!(answer.usage.input_tokens, 1);
        assert_eq!(answer.model.as_deref(), Some("m1"));
        assert!(answer.completed);
    }

    #[test]
    fn json_key_spelled_with_escapes_is_still_recognised() {
        let answer = read_json(r#"{"us\u0061ge":{"output_tokens":2}}"#);
        assert_eq!(answer.usage.output_tokens, 2);
    }

    #[test]
    fn json_scalars_and_whitespace_between_tokens_are_skipped() {
        let body = "{ \"n\" : 12 ,\n\t\"ok\":true, \"none\" : null ,\"usage\" :\r\n { \"input_tokens\" : 5 } }  \n";
        let answer = read_json(body);
        assert_eq!(answer.usage.input_tokens, 5);
        assert!(answer.completed);
    }

    #[test]
    fn truncated_json_keeps_the_usage_seen_and_is_not_completed() {
        let body = r#"{"model":"claude-x","usage":{"input_tokens":3},"content":[{"type":"text","text":"hal"#;
        let answer = read_json(body);
        assert_eq!(answer.usage.input_tokens, 3);
        assert_eq!(answer.model.as_deref(), Some("claude-x"));
        assert!(!answer.completed);
    }

    #[test]
    fn json_value_longer_than_its_cap_is_skipped() {
        let body = format!(
            r#"{{"usage":{{"input_tokens":3,"padding":"{}"}},"model":"claude-x"}}"#,
            "x".repeat(MAX_JSON_VALUE_BYTES)
        );
        let answer = read_json(&body);
        assert_eq!(answer.usage, Usage::default());
        assert_eq!(answer.model.as_deref(), Some("claude-x"));
        assert!(answer.completed);
    }

    #[test]
    fn json_that_is_not_one_object_is_not_completed() {
        for body in [
            "[1,2]",
            "\"usage\"",
            r#"{"usage":{"input_tokens":1}} trailing"#,
            r#"{"usage":}"#,
            r#"{"a" 1}"#,
            r#"{,"a":1}"#,
        ] {
            assert!(!read_json(body).completed, "{body}");
        }
        // The usage read before the trailing bytes still counts.
        assert_eq!(
            read_json(r#"{"usage":{"input_tokens":1}} trailing"#)
                .usage
                .input_tokens,
            1
        );
    }

    #[test]
    fn overlong_model_names_are_not_kept() {
        let body = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_NAME_BYTES + 1));
        assert_eq!(read_json(&body).model, None);
    }

    #[test]
    fn other_formats_count_nothing_and_hold_nothing() {
        let mut parser = UsageParser::new(AnswerFormat::Other);
        parser.feed(&fixture("stream-text.sse"));
        parser.feed(&fixture("message.json"));
        assert_eq!(parser.buffered_bytes(), 0);
        assert_eq!(parser.finish(), Answer::default());
    }

    #[test]
    fn content_type_decides_the_answer_format() {
        let cases = [
            (Some("text/event-stream"), AnswerFormat::EventStream),
            (
                Some("Text/Event-Stream; charset=utf-8"),
                AnswerFormat::EventStream,
            ),
            (Some(" text/event-stream ;x=y"), AnswerFormat::EventStream),
            (Some("application/json"), AnswerFormat::Json),
            (Some("APPLICATION/JSON;charset=UTF-8"), AnswerFormat::Json),
            (Some("application/problem+json"), AnswerFormat::Json),
            (Some("application/vnd.api+JSON; v=1"), AnswerFormat::Json),
            (Some("+json"), AnswerFormat::Other),
            (Some("text/plain"), AnswerFormat::Other),
            (Some("application/jsonl"), AnswerFormat::Other),
            (Some(""), AnswerFormat::Other),
            (None, AnswerFormat::Other),
        ];
        for (content_type, format) in cases {
            assert_eq!(
                AnswerFormat::from_content_type(content_type),
                format,
                "{content_type:?}"
            );
        }
    }

    #[test]
    fn answer_tells_what_is_known_before_the_end() {
        let mut parser = UsageParser::new(AnswerFormat::EventStream);
        parser.feed(event(Some("message_start"), MESSAGE_START).as_bytes());
        let so_far = parser.answer();
        assert_eq!(so_far.usage, usage(10, 1, 20, 30));
        assert_eq!(so_far.model.as_deref(), Some("claude-sonnet-4-5"));
        assert!(!so_far.completed);
    }

    #[test]
    fn finish_is_idempotent_and_later_chunks_are_ignored() {
        let mut parser = UsageParser::new(AnswerFormat::EventStream);
        parser.feed(event(Some("message_start"), MESSAGE_START).as_bytes());
        let first = parser.finish();
        parser.feed(
            event(
                None,
                r#"{"type":"message_delta","usage":{"output_tokens":50}}"#,
            )
            .as_bytes(),
        );
        assert_eq!(parser.finish(), first);
        assert_eq!(parser.answer(), first);
        assert_eq!(parser.buffered_bytes(), first.model.unwrap().capacity());
    }

    #[test]
    fn usage_serializes_with_the_stats_field_names() {
        let json = serde_json::to_value(usage(1, 2, 3, 4)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"input_tokens": 1, "output_tokens": 2,
                "cache_creation_input_tokens": 3, "cache_read_input_tokens": 4})
        );
        let with_split = Usage {
            cache_creation_5m_input_tokens: Some(3),
            cache_creation_1h_input_tokens: Some(0),
            ..usage(1, 2, 3, 4)
        };
        let round_trip: Usage =
            serde_json::from_str(&serde_json::to_string(&with_split).unwrap()).unwrap();
        assert_eq!(round_trip, with_split);
        let partial: Usage = serde_json::from_str(r#"{"input_tokens":5}"#).unwrap();
        assert_eq!(partial, usage(5, 0, 0, 0));
    }

    /// Bytes that are likely to reach the parsers' corners: syntax, line ends, field names.
    fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
        let tokens: Vec<&'static [u8]> = vec![
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b"\\",
            b":",
            b",",
            b" ",
            b"\n",
            b"\r",
            b"\r\n",
            b"data:",
            b"data: ",
            b"event: ",
            b"message_start",
            b"message_delta",
            b"error",
            b"\"usage\"",
            b"\"model\"",
            b"\"type\"",
            b"\"input_tokens\":",
            b"7",
            b"\xef\xbb\xbf",
        ];
        let piece = prop_oneof![
            any::<u8>().prop_map(|byte| vec![byte]),
            proptest::sample::select(tokens).prop_map(<[u8]>::to_vec),
        ];
        proptest::collection::vec(piece, 0..200).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn fixtures_cut_anywhere_into_any_chunks_give_the_same_answer(
            which in 0..5usize,
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
            crlf in any::<bool>(),
        ) {
            let answer = fixture_answers().swap_remove(which);
            let body = if crlf { replace_line_ends(&answer.body, b"\r\n") } else { answer.body };
            let cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(body.len() + 1)).collect();
            prop_assert_eq!(read_cut_at(answer.format, &body, &cuts), answer.expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_read_the_same_however_cut(
            bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), tricky_bytes()],
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
            for format in [AnswerFormat::EventStream, AnswerFormat::Json, AnswerFormat::Other] {
                let whole = read_whole(format, &bytes);
                prop_assert_eq!(read_cut_at(format, &bytes, &cuts), whole);
            }
        }

        #[test]
        fn fixture_followed_by_garbage_never_panics(
            which in 0..5usize,
            tail in tricky_bytes(),
        ) {
            let answer = fixture_answers().swap_remove(which);
            let mut body = answer.body;
            body.extend_from_slice(&tail);
            let read = read_whole(answer.format, &body);
            // An SSE answer's end, once seen, stays seen whatever follows.
            if answer.format == AnswerFormat::EventStream {
                prop_assert!(read.completed || !answer.expected.completed);
            }
        }
    }
}
