//! A JSON object's top-level values, read in one pass over its bytes without holding the body:
//! only the values of the keys a [`ValueHandler`] wants are kept, each up to a cap.

use std::borrow::Cow;

use super::bounded::BoundedBuffer;

/// Most bytes kept of one wanted top-level value; a longer one is skipped, not cut.
pub const MAX_JSON_VALUE_BYTES: usize = 8 * 1024;
// Top-level keys of interest are short; longer keys are skipped unread.
const MAX_JSON_KEY_BYTES: usize = 32;

/// What the protocol wants of a JSON body.
pub trait ValueHandler {
    /// How the handler names the keys it wants.
    type Key: Copy;
    /// The key (escapes decoded) is wanted: its value will be kept.
    fn wants(&self, key: &[u8]) -> Option<Self::Key>;
    /// A wanted key's whole value, as raw JSON text (never cut: an over-long one is skipped).
    fn on_value(&mut self, key: Self::Key, value: &[u8]);
    /// The top-level object closed (`true`), or bytes followed it after all (`false`).
    fn on_end(&mut self, complete: bool);
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
/// the top-level values its handler wants, handing each over whole as it ends.
#[derive(Debug)]
pub struct JsonBodyReader<K> {
    phase: JsonPhase,
    key: BoundedBuffer,
    wanted: Option<K>,
    value: BoundedBuffer,
    /// Where the current value began in the chunk being fed, while none of it is buffered: a
    /// value that ends in the chunk it began in is handed over from the chunk itself, uncopied.
    value_start: Option<usize>,
    /// Open objects and arrays inside the current value.
    nesting: u64,
    in_string: bool,
    escaped: bool,
}

impl<K: Copy> JsonBodyReader<K> {
    pub const fn new() -> Self {
        Self {
            phase: JsonPhase::BeforeBody,
            key: BoundedBuffer::new(MAX_JSON_KEY_BYTES),
            wanted: None,
            value: BoundedBuffer::new(MAX_JSON_VALUE_BYTES),
            value_start: None,
            nesting: 0,
            in_string: false,
            escaped: false,
        }
    }

    pub fn feed(&mut self, bytes: &[u8], handler: &mut impl ValueHandler<Key = K>) {
        let mut at = 0;
        while at < bytes.len() {
            at += match self.phase {
                JsonPhase::Key => self.read_key(&bytes[at..], handler),
                JsonPhase::Value(shape) => self.read_value(shape, bytes, at, handler),
                JsonPhase::Unreadable => return,
                _ => {
                    self.read_structure(bytes[at], handler);
                    if matches!(self.phase, JsonPhase::Value(_)) {
                        self.value_start = Some(at);
                    }
                    1
                }
            };
        }
        // A value whose first byte ended the chunk: keep that byte for the next one.
        if let Some(start) = self.value_start.take() {
            if self.wanted.is_some() {
                self.value.push(&bytes[start..]);
            }
        }
    }

    /// One byte between keys and values: whitespace, `{`, `:`, `,`, `}` or a value's start.
    fn read_structure(&mut self, byte: u8, handler: &mut impl ValueHandler<Key = K>) {
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
                handler.on_end(true);
                JsonPhase::Done
            }
            (JsonPhase::BeforeColon, b':') => JsonPhase::BeforeValue,
            (JsonPhase::BeforeValue, b',' | b':' | b'}' | b']') => JsonPhase::Unreadable,
            (JsonPhase::BeforeValue, _) => self.start_value(byte),
            (JsonPhase::AfterValue, b',') => JsonPhase::NextKey,
            (JsonPhase::Done, _) => {
                handler.on_end(false); // trailing bytes: not one JSON document after all
                JsonPhase::Unreadable
            }
            _ => JsonPhase::Unreadable,
        };
    }

    /// Reads key bytes up to the closing quote; returns how many bytes it used.
    fn read_key(&mut self, bytes: &[u8], handler: &impl ValueHandler<Key = K>) -> usize {
        let (used, closed) = scan_string(bytes, &mut self.escaped);
        let raw = &bytes[..used - usize::from(closed)];
        if closed && !self.key.is_used() {
            // The whole key is in this chunk: read it where it lies.
            self.wanted = (raw.len() <= MAX_JSON_KEY_BYTES)
                .then(|| wanted_key(raw, handler))
                .flatten();
            self.phase = JsonPhase::BeforeColon;
            return used;
        }
        self.key.push(raw);
        if closed {
            self.wanted = self.key.contents().and_then(|raw| wanted_key(raw, handler));
            self.phase = JsonPhase::BeforeColon;
        }
        used
    }

    /// A value begins with `first` (which `feed` finds again at [`Self::value_start`]).
    fn start_value(&mut self, first: u8) -> JsonPhase {
        self.value.clear();
        self.escaped = false;
        self.in_string = false;
        self.nesting = 1;
        JsonPhase::Value(match first {
            b'{' | b'[' => JsonValueShape::Container,
            b'"' => JsonValueShape::String,
            _ => JsonValueShape::Bare,
        })
    }

    /// Reads value bytes from `chunk[at..]` up to the value's end; returns how many bytes it
    /// used.
    fn read_value(
        &mut self,
        shape: JsonValueShape,
        chunk: &[u8],
        at: usize,
        handler: &mut impl ValueHandler<Key = K>,
    ) -> usize {
        let bytes = &chunk[at..];
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
        let start = self.value_start.take();
        if let Some(wanted) = self.wanted.filter(|_| ended && start.is_some()) {
            // The whole value is in this chunk: hand it over from there, capped as if buffered.
            self.wanted = None;
            let value = &chunk[start.unwrap_or(at)..at + used];
            if value.len() <= MAX_JSON_VALUE_BYTES {
                handler.on_value(wanted, value);
            }
            self.phase = JsonPhase::AfterValue;
            return used;
        }
        if self.wanted.is_some() {
            self.value.push(&chunk[start.unwrap_or(at)..at + used]);
        }
        if ended {
            self.end_value(handler);
            self.phase = JsonPhase::AfterValue;
        }
        used
    }

    fn scan_container(&mut self, bytes: &[u8]) -> (usize, bool) {
        scan_container(
            bytes,
            &mut self.nesting,
            &mut self.in_string,
            &mut self.escaped,
        )
    }

    fn end_value(&mut self, handler: &mut impl ValueHandler<Key = K>) {
        let Some(wanted) = self.wanted.take() else {
            return;
        };
        if let Some(value) = self.value.contents() {
            handler.on_value(wanted, value);
        }
    }

    pub fn held_bytes(&self) -> usize {
        self.key.held_bytes() + self.value.held_bytes()
    }
}

/// Reads a container value's bytes (after its opening bracket, `nesting` open) up to its
/// matching close, tracking strings and escapes; returns how many bytes it used and whether
/// the container closed.
pub(super) fn scan_container(
    bytes: &[u8],
    nesting: &mut u64,
    in_string: &mut bool,
    escaped: &mut bool,
) -> (usize, bool) {
    let mut at = 0;
    while at < bytes.len() {
        if *in_string {
            // Strings hold most of a value's bytes: crossed in runs, not byte by byte.
            let (used, closed) = scan_string(&bytes[at..], escaped);
            at += used;
            *in_string = !closed;
            continue;
        }
        match bytes[at] {
            b'"' => *in_string = true,
            b'{' | b'[' => *nesting = nesting.saturating_add(1),
            b'}' | b']' => {
                *nesting -= 1;
                if *nesting == 0 {
                    return (at + 1, true);
                }
            }
            _ => {}
        }
        at += 1;
    }
    (bytes.len(), false)
}

/// Advances through a JSON string's content; returns the bytes used (closing quote included)
/// and whether the string closed.
pub(super) fn scan_string(bytes: &[u8], escaped: &mut bool) -> (usize, bool) {
    let mut at = 0;
    if *escaped && !bytes.is_empty() {
        *escaped = false; // the escaped byte, whatever it is
        at = 1;
    }
    while let Some(found) = memchr::memchr2(b'"', b'\\', &bytes[at..]) {
        let special = at + found;
        if bytes[special] == b'"' {
            return (special + 1, true);
        }
        if special + 1 == bytes.len() {
            *escaped = true;
            return (bytes.len(), false);
        }
        at = special + 2;
    }
    (bytes.len(), false)
}

/// Names the key from its raw bytes (between the quotes), decoding escapes if it has any.
fn wanted_key<K>(raw: &[u8], handler: &impl ValueHandler<Key = K>) -> Option<K> {
    handler.wants(&decoded_key(raw)?)
}

/// A key's raw bytes (between the quotes) with its escapes decoded; `None` when they are broken.
pub(super) fn decoded_key(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !raw.contains(&b'\\') {
        return Some(Cow::Borrowed(raw));
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    let decoded = serde_json::from_slice::<String>(&quoted).ok()?;
    Some(Cow::Owned(decoded.into_bytes()))
}

impl<K: Copy> Default for JsonBodyReader<K> {
    fn default() -> Self {
        Self::new()
    }
}
