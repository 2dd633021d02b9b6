//! Meters the answer of `GET …/v1/messages/batches/{id}/results`: a JSONL stream with one
//! line per request of the batch. Every `succeeded` line's `result.message.usage` is counted
//! and priced on its own (its own model, its own long-context check) at the batch rate.
//!
//! Memory: lines are scanned, never buffered. Only the three values metering needs
//! (`result.type`, `result.message.model`, `result.message.usage`) are kept, each up to
//! [`MAX_VALUE_BYTES`]; a result holding a multi-megabyte message costs nothing extra.

use serde_json::Value;

use super::anthropic::usage_from_json;
use crate::pricing::PriceTable;
use crate::readers::MAX_NAME_BYTES;
use crate::usage::{Tokens, Usage};

/// Most bytes kept of one wanted value; a longer one is skipped, and its line counts nothing.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;
/// Nesting deeper than this makes a line unreadable (skipped, not buffered).
pub const MAX_DEPTH: usize = 64;
const MAX_KEY_BYTES: usize = 16;

/// Whether a request fetches a Message Batch's results. The answer is recognised by its
/// request (a `GET` of `…/messages/batches/{id}/results`), not by its content type, which the
/// API documents only as a `.jsonl` download; an error answer is JSON and read as one.
pub fn is_batch_results_request(method: &str, path: &str) -> bool {
    let mut segments = path.trim_end_matches('/').rsplit('/');
    method.eq_ignore_ascii_case("GET")
        && segments.next() == Some("results")
        && segments.next().is_some_and(|id| !id.is_empty())
        && segments.next() == Some("batches")
        && segments.next() == Some("messages")
}

/// What the results told, as far as they have been read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchResults {
    /// Token counts and searches of every succeeded line, summed.
    pub usage: Usage,
    /// Their cost at the batch rate, for the lines whose model has a price.
    pub cost_usd: f64,
    /// The model of the first succeeded line (a batch may mix models; each line is priced
    /// at its own).
    pub model: Option<String>,
    pub succeeded: u64,
    /// Lines that were not `succeeded` (`errored`, `canceled`, `expired`).
    pub not_succeeded: u64,
    /// Succeeded lines with tokens whose model has no price (counted at 0).
    pub unpriced: u64,
    /// Lines that could not be read (not JSON, too deep, a wanted value over its cap).
    pub unreadable: u64,
}

/// Reads a results stream whatever its chunking, pricing each line as it ends.
#[derive(Debug)]
pub struct BatchResultsReader {
    prices: PriceTable,
    line: LineScanner,
    results: BatchResults,
}

impl BatchResultsReader {
    pub fn new(prices: PriceTable) -> Self {
        Self {
            prices,
            line: LineScanner::default(),
            results: BatchResults::default(),
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if byte == b'\n' {
                self.end_line();
            } else {
                self.line.byte(byte);
            }
        }
    }

    /// Ends the stream; a last line without its line feed still counts.
    pub fn finish(&mut self) -> BatchResults {
        self.end_line();
        self.results.clone()
    }

    /// What is known so far.
    pub fn results(&self) -> &BatchResults {
        &self.results
    }

    /// Bytes held now, whatever the stream's size.
    pub fn held_bytes(&self) -> usize {
        self.line.held_bytes()
            + self.results.model.as_ref().map_or(0, String::capacity)
            + self.results.usage.iterations.capacity() * std::mem::size_of::<Tokens>()
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let Some(found) = line.into_found() else {
            return;
        };
        let results = &mut self.results;
        if found.unreadable {
            results.unreadable += 1;
            return;
        }
        if found.result_type.as_deref() != Some("succeeded") {
            results.not_succeeded += u64::from(found.result_type.is_some());
            return;
        }
        results.succeeded += 1;
        let usage = found
            .usage
            .as_ref()
            .map(usage_from_json)
            .unwrap_or_default();
        match self
            .prices
            .cost_usd_billed(found.model.as_deref(), &usage, true)
        {
            Some(cost) => results.cost_usd += cost,
            None if usage.tokens() != Default::default() => results.unpriced += 1,
            None => {}
        }
        if results.model.is_none() {
            results.model = found.model;
        }
        results.usage.add(&usage);
    }
}

/// The keys on the way to the values metering reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Result,
    Type,
    Message,
    Model,
    Usage,
    Other,
}

impl Key {
    fn of(raw: &[u8]) -> Self {
        match raw {
            b"result" => Key::Result,
            b"type" => Key::Type,
            b"message" => Key::Message,
            b"model" => Key::Model,
            b"usage" => Key::Usage,
            _ => Key::Other,
        }
    }
}

/// A value of a result line that metering reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    ResultType,
    Model,
    Usage,
}

impl Wanted {
    fn at(path: &[Key]) -> Option<Self> {
        match path {
            [Key::Result, Key::Type] => Some(Wanted::ResultType),
            [Key::Result, Key::Message, Key::Model] => Some(Wanted::Model),
            [Key::Result, Key::Message, Key::Usage] => Some(Wanted::Usage),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Container {
    is_object: bool,
    /// In an object: the next string is a key.
    expecting_key: bool,
    /// In an object: the key of the value being read.
    key: Key,
}

/// What one line gave.
#[derive(Debug, Default)]
struct Found {
    result_type: Option<String>,
    model: Option<String>,
    usage: Option<Value>,
    /// Size of the usage value as it was written, to account for what it holds.
    usage_bytes: usize,
    unreadable: bool,
}

/// Scans one JSON line byte by byte, tracking the path of keys, and keeps the wanted values.
#[derive(Debug, Default)]
struct LineScanner {
    containers: Vec<Container>,
    in_string: bool,
    escaped: bool,
    string_is_key: bool,
    key: Vec<u8>,
    key_overflowed: bool,
    /// The wanted value being kept, with the nesting depth it started at.
    capture: Option<(Wanted, usize)>,
    value: Vec<u8>,
    found: Found,
    /// Any byte other than whitespace was seen: the line is not blank.
    seen: bool,
    /// The line's object has closed.
    closed: bool,
}

impl LineScanner {
    fn byte(&mut self, byte: u8) {
        if self.found.unreadable {
            return;
        }
        if !matches!(byte, b' ' | b'\t' | b'\r') {
            self.seen = true;
        }
        if self.in_string {
            self.string_byte(byte);
            return;
        }
        if self.containers.is_empty() && !matches!(byte, b' ' | b'\t' | b'\r') {
            // A line is one object, and nothing after it.
            if byte != b'{' || self.closed {
                self.found.unreadable = true;
                return;
            }
        }
        match byte {
            b'"' => {
                let is_key = self
                    .containers
                    .last()
                    .is_some_and(|top| top.is_object && top.expecting_key);
                if !is_key {
                    self.value_starts();
                }
                self.keep(byte);
                self.in_string = true;
                self.string_is_key = is_key;
                self.key.clear();
                self.key_overflowed = false;
            }
            b'{' | b'[' => {
                self.value_starts();
                self.keep(byte);
                if self.containers.len() == MAX_DEPTH {
                    self.found.unreadable = true;
                    return;
                }
                self.containers.push(Container {
                    is_object: byte == b'{',
                    expecting_key: byte == b'{',
                    key: Key::Other,
                });
            }
            b'}' | b']' => {
                self.keep(byte);
                let closes_object = byte == b'}';
                match self.containers.pop() {
                    Some(open) if open.is_object == closes_object => self.value_may_end(),
                    _ => self.found.unreadable = true,
                }
                self.closed = self.containers.is_empty();
            }
            b':' => {
                self.keep(byte);
                match self.containers.last_mut() {
                    Some(top) if top.is_object && !top.expecting_key => {}
                    _ => self.found.unreadable = true,
                }
            }
            b',' => {
                self.keep(byte);
                if let Some(top) = self.containers.last_mut() {
                    if top.is_object {
                        top.expecting_key = true;
                        top.key = Key::Other;
                    }
                }
            }
            _ => self.keep(byte),
        }
    }

    fn string_byte(&mut self, byte: u8) {
        self.keep(byte);
        if self.escaped {
            self.escaped = false;
        } else if byte == b'\\' {
            self.escaped = true;
        } else if byte == b'"' {
            self.in_string = false;
            if self.string_is_key {
                let key = if self.key_overflowed {
                    Key::Other
                } else {
                    Key::of(&self.key)
                };
                if let Some(top) = self.containers.last_mut() {
                    top.key = key;
                    top.expecting_key = false;
                }
            } else {
                self.value_may_end();
            }
            return;
        }
        if self.string_is_key {
            if self.key.len() < MAX_KEY_BYTES {
                self.key.push(byte);
            } else {
                self.key_overflowed = true;
            }
        }
    }

    /// A value starts at the current position: keep it if its path is a wanted one.
    fn value_starts(&mut self) {
        if self.capture.is_some() {
            return;
        }
        let depth = self.containers.len();
        let in_object_value = self
            .containers
            .last()
            .is_some_and(|top| top.is_object && !top.expecting_key);
        if depth > 3 || !in_object_value {
            return;
        }
        let mut path = [Key::Other; 3];
        for (key, container) in path.iter_mut().zip(&self.containers) {
            *key = container.key;
        }
        if let Some(wanted) = Wanted::at(&path[..depth]) {
            self.capture = Some((wanted, self.containers.len()));
            self.value.clear();
        }
    }

    /// A string closed or a container closed: the kept value ends if it was this one.
    fn value_may_end(&mut self) {
        let Some((wanted, depth)) = self.capture else {
            return;
        };
        if self.containers.len() != depth {
            return;
        }
        self.capture = None;
        let Ok(value) = serde_json::from_slice::<Value>(&self.value) else {
            self.found.unreadable = true;
            return;
        };
        let name = || {
            value
                .as_str()
                .filter(|name| name.len() <= MAX_NAME_BYTES)
                .map(str::to_owned)
        };
        match wanted {
            Wanted::ResultType => self.found.result_type = name(),
            Wanted::Model => self.found.model = name(),
            Wanted::Usage => {
                self.found.usage_bytes = self.value.len();
                self.found.usage = Some(value);
            }
        }
        self.value = Vec::new();
    }

    fn keep(&mut self, byte: u8) {
        if self.capture.is_none() {
            return;
        }
        if self.value.len() == MAX_VALUE_BYTES {
            self.found.unreadable = true;
            self.capture = None;
            self.value = Vec::new();
            return;
        }
        self.value.push(byte);
    }

    /// What the line gave, or `None` for a blank line.
    fn into_found(self) -> Option<Found> {
        if !self.seen {
            return None;
        }
        let mut found = self.found;
        // A line cut short, or with a wanted value left open, is not a whole result.
        if self.in_string || !self.containers.is_empty() || self.capture.is_some() {
            found.unreadable = true;
        }
        Some(found)
    }

    fn held_bytes(&self) -> usize {
        self.containers.capacity() * std::mem::size_of::<Container>()
            + self.key.capacity()
            + self.value.capacity()
            + self.found.result_type.as_ref().map_or(0, String::capacity)
            + self.found.model.as_ref().map_or(0, String::capacity)
            + self.found.usage_bytes
    }
}

#[cfg(test)]
mod tests;
