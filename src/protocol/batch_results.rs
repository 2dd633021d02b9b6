//! Meters the answers that carry a batch's results: a JSONL file with one result per line
//! (Anthropic's Message Batches results, Gemini's batch responses file, OpenAI's batch output
//! file), or one JSON document holding the results in an array (a Gemini batch with inlined
//! responses). Each protocol says in a [`BatchReading`] where its results sit, which values of a
//! result metering reads, and what they mean; this one reader scans the bytes, keeps only those
//! values, and prices every succeeded result on its own (its own model, its own long-context
//! check) at the batch rate.
//!
//! Memory: results are scanned, never buffered. Only the values a [`BatchReading`] names are
//! kept, each up to [`MAX_VALUE_BYTES`]; a result holding a multi-megabyte answer costs nothing
//! extra.

use serde_json::Value;

use crate::pricing::PriceTable;
use crate::readers::MAX_NAME_BYTES;
use crate::usage::{Tokens, Usage};

/// Most bytes kept of one wanted value; a longer one is skipped, and its result counts nothing.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;
/// Nesting deeper than this makes a line (or a document) unreadable (skipped, not buffered).
pub const MAX_DEPTH: usize = 64;
/// Longest key compared with the keys of a reading's paths; a longer one matches none.
const MAX_KEY_BYTES: usize = 32;
/// The path element that stands for any element of an array.
pub const ANY_ELEMENT: &str = "[]";

/// How one protocol's batch results are read.
#[derive(Debug)]
pub struct BatchReading {
    /// JSONL: every line is one result (a broken line does not break the next). Otherwise the
    /// body is one JSON document and the results are the objects at [`results_at`].
    ///
    /// [`results_at`]: Self::results_at
    pub lines: bool,
    /// Where results sit, as paths of keys from the document's root ([`ANY_ELEMENT`] for an
    /// array's elements); JSONL's results are the lines' objects (`&[&[]]`). When results are
    /// found under more than one of these paths (one list mirrored in two places), only those
    /// under the first path that has any are counted.
    pub results_at: &'static [&'static [&'static str]],
    /// The values metering reads, as paths of keys from a result's object.
    pub values: &'static [&'static [&'static str]],
    /// What a result's values (in the order of `values`, `None` where absent) say.
    pub read: fn(&[Option<Value>]) -> BatchResult,
}

/// What one result says.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchResult {
    /// It succeeded and used these tokens of this model.
    Succeeded { model: Option<String>, usage: Usage },
    /// It failed, was canceled or expired: nothing to charge.
    NotSucceeded,
    /// Not a result at all (no value of one): not counted.
    Unknown,
}

/// A value that names something (a model, a result type), when it is a short enough string.
pub fn name(value: &Option<Value>) -> Option<String> {
    value
        .as_ref()
        .and_then(Value::as_str)
        .filter(|name| name.len() <= MAX_NAME_BYTES)
        .map(str::to_owned)
}

/// What the results told, as far as they have been read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchResults {
    /// Token counts and searches of every succeeded result, summed.
    pub usage: Usage,
    /// Their cost at the batch rate, for the results whose model has a price.
    pub cost_usd: f64,
    /// The model of the first succeeded result (a batch may mix models; each result is priced
    /// at its own).
    pub model: Option<String>,
    pub succeeded: u64,
    /// Results that did not succeed (errored, canceled, expired, a non-200 status).
    pub not_succeeded: u64,
    /// Succeeded results with tokens whose model has no price (counted at 0).
    pub unpriced: u64,
    /// Results that could not be read (not JSON, too deep, a wanted value over its cap).
    pub unreadable: u64,
}

impl BatchResults {
    fn is_empty(&self) -> bool {
        self.succeeded + self.not_succeeded + self.unreadable == 0
    }

    fn held_bytes(&self) -> usize {
        self.model.as_ref().map_or(0, String::capacity)
            + self.usage.iterations.capacity() * std::mem::size_of::<Tokens>()
    }
}

/// Reads batch results whatever their chunking, pricing each result as it ends.
#[derive(Debug)]
pub struct BatchResultsReader {
    prices: PriceTable,
    reading: &'static BatchReading,
    scanner: Scanner,
    /// One tally per path of [`BatchReading::results_at`].
    tallies: Vec<BatchResults>,
}

impl BatchResultsReader {
    pub fn new(prices: PriceTable, reading: &'static BatchReading) -> Self {
        Self {
            prices,
            reading,
            scanner: Scanner::new(reading),
            tallies: vec![BatchResults::default(); reading.results_at.len().max(1)],
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if byte == b'\n' && self.reading.lines {
                self.end_line();
            } else if let Some(ended) = self.scanner.byte(byte) {
                self.count(ended);
            }
        }
    }

    /// Ends the stream; a last line without its line feed still counts.
    pub fn finish(&mut self) -> BatchResults {
        if self.reading.lines {
            self.end_line();
        }
        self.results().clone()
    }

    /// What is known so far: the tally of the first place results were found in.
    pub fn results(&self) -> &BatchResults {
        self.tallies
            .iter()
            .find(|tally| !tally.is_empty())
            .unwrap_or(&self.tallies[0])
    }

    /// Bytes held now, whatever the stream's size.
    pub fn held_bytes(&self) -> usize {
        self.scanner.held_bytes()
            + self.tallies.capacity() * std::mem::size_of::<BatchResults>()
            + self
                .tallies
                .iter()
                .map(BatchResults::held_bytes)
                .sum::<usize>()
    }

    fn end_line(&mut self) {
        let scanner = std::mem::replace(&mut self.scanner, Scanner::new(self.reading));
        if let Some(ended) = scanner.end_line() {
            self.count(ended);
        }
    }

    fn count(&mut self, ended: Ended) {
        let tally = &mut self.tallies[ended.place];
        let Some(values) = ended.values else {
            tally.unreadable += 1;
            return;
        };
        let (model, usage) = match (self.reading.read)(&values) {
            BatchResult::Succeeded { model, usage } => (model, usage),
            BatchResult::NotSucceeded => {
                tally.not_succeeded += 1;
                return;
            }
            BatchResult::Unknown => return,
        };
        tally.succeeded += 1;
        match self.prices.cost_usd_billed(model.as_deref(), &usage, true) {
            Some(cost) => tally.cost_usd += cost,
            None if usage.tokens() != Default::default() => tally.unpriced += 1,
            None => {}
        }
        if tally.model.is_none() {
            tally.model = model;
        }
        tally.usage.add(&usage);
    }
}

/// A result whose end was reached: where it was found, and its values (`None`: unreadable).
struct Ended {
    place: usize,
    values: Option<Vec<Option<Value>>>,
}

/// A key on the way to a value, as the reading's paths name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// The key at this index of the scanner's vocabulary.
    Named(u8),
    /// Any element of an array.
    Element,
    /// A key no path names.
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Container {
    is_object: bool,
    /// In an object: the next string is a key.
    expecting_key: bool,
    /// In an object: the key of the value being read; in an array: [`Key::Element`].
    key: Key,
}

/// The result being read: the nesting depth its object opened at, and which path of
/// [`BatchReading::results_at`] it was found under.
#[derive(Debug, Clone, Copy)]
struct OpenResult {
    depth: usize,
    place: usize,
}

/// Scans JSON byte by byte, tracking the path of keys, finds the results and keeps the wanted
/// values of each.
#[derive(Debug)]
struct Scanner {
    reading: &'static BatchReading,
    /// Every key the reading's paths name, once.
    vocabulary: Vec<&'static str>,
    containers: Vec<Container>,
    in_string: bool,
    escaped: bool,
    string_is_key: bool,
    /// Within a number, `true`, `false` or `null`.
    in_bare: bool,
    key: Vec<u8>,
    key_overflowed: bool,
    result: Option<OpenResult>,
    /// The wanted value being kept (its index in the reading's values), with the nesting depth
    /// it started at.
    capture: Option<(usize, usize)>,
    value: Vec<u8>,
    values: Vec<Option<Value>>,
    /// Bytes of the kept values as they were written, to account for what they hold.
    values_bytes: usize,
    /// A wanted value of the open result could not be kept.
    result_unreadable: bool,
    /// Not JSON (or nested too deep): nothing more is read until the line ends.
    broken: bool,
    /// Any byte other than whitespace was seen: the line is not blank.
    seen: bool,
    /// The root value has closed.
    closed: bool,
    /// JSONL: the line's result object closed.
    result_closed: bool,
}

impl Scanner {
    fn new(reading: &'static BatchReading) -> Self {
        let mut vocabulary: Vec<&'static str> = Vec::new();
        let keys = reading.results_at.iter().chain(reading.values).copied();
        for key in keys.flatten() {
            if *key != ANY_ELEMENT && !vocabulary.contains(key) && vocabulary.len() < 255 {
                vocabulary.push(key);
            }
        }
        Self {
            reading,
            vocabulary,
            containers: Vec::new(),
            in_string: false,
            escaped: false,
            string_is_key: false,
            in_bare: false,
            key: Vec::new(),
            key_overflowed: false,
            result: None,
            capture: None,
            value: Vec::new(),
            values: Vec::new(),
            values_bytes: 0,
            result_unreadable: false,
            broken: false,
            seen: false,
            closed: false,
            result_closed: false,
        }
    }

    /// One byte; returns the result whose object it closed, in a document.
    fn byte(&mut self, byte: u8) -> Option<Ended> {
        if self.broken {
            return None;
        }
        let blank = matches!(byte, b' ' | b'\t' | b'\r' | b'\n');
        if !blank {
            self.seen = true;
        }
        if self.in_string {
            self.string_byte(byte);
            return None;
        }
        if self.in_bare && (blank || matches!(byte, b',' | b'}' | b']')) {
            // A number, `true`, `false` or `null` ends before its delimiter.
            self.in_bare = false;
            self.value_may_end();
        }
        if self.containers.is_empty() && !blank && (byte != b'{' || self.closed) {
            // A line, or the document, is one object and nothing after it.
            self.broken = true;
            return None;
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
                    self.broken = true;
                    return None;
                }
                let opens_result = byte == b'{' && self.result.is_none();
                let place = if opens_result {
                    self.result_place()
                } else {
                    None
                };
                self.containers.push(Container {
                    is_object: byte == b'{',
                    expecting_key: byte == b'{',
                    key: if byte == b'[' {
                        Key::Element
                    } else {
                        Key::Other
                    },
                });
                if let Some(place) = place {
                    self.result = Some(OpenResult {
                        depth: self.containers.len(),
                        place,
                    });
                    self.values = vec![None; self.reading.values.len()];
                }
            }
            b'}' | b']' => {
                self.keep(byte);
                let depth = self.containers.len();
                let closes_object = byte == b'}';
                match self.containers.pop() {
                    Some(open) if open.is_object == closes_object => self.value_may_end(),
                    _ => {
                        self.broken = true;
                        return None;
                    }
                }
                self.closed = self.containers.is_empty();
                if self.result.is_some_and(|result| result.depth == depth) {
                    return self.result_closes();
                }
            }
            b':' => {
                self.keep(byte);
                match self.containers.last_mut() {
                    Some(top) if top.is_object && !top.expecting_key => {}
                    _ => self.broken = true,
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
            _ if blank || self.in_bare => self.keep(byte),
            _ => {
                self.value_starts();
                self.in_bare = true;
                self.keep(byte);
            }
        }
        None
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
                let key = self.named_key();
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

    fn named_key(&self) -> Key {
        if self.key_overflowed {
            return Key::Other;
        }
        self.vocabulary
            .iter()
            .position(|name| name.as_bytes() == self.key.as_slice())
            .map_or(Key::Other, |at| Key::Named(at as u8))
    }

    /// Whether the containers' keys spell `path`.
    fn at_path(&self, containers: &[Container], path: &[&str]) -> bool {
        containers.len() == path.len()
            && containers
                .iter()
                .zip(path)
                .all(|(container, name)| match container.key {
                    Key::Element => *name == ANY_ELEMENT,
                    Key::Named(at) => self.vocabulary[usize::from(at)] == *name,
                    Key::Other => false,
                })
    }

    /// Which path of `results_at` an object starting here is a result under, if any.
    fn result_place(&self) -> Option<usize> {
        self.reading
            .results_at
            .iter()
            .position(|path| self.at_path(&self.containers, path))
    }

    /// A value starts at the current position: keep it if its path is a wanted one.
    fn value_starts(&mut self) {
        let Some(result) = self.result else {
            return;
        };
        if self.capture.is_some() || self.containers.len() < result.depth {
            return;
        }
        let within = &self.containers[result.depth - 1..];
        let wanted = self
            .reading
            .values
            .iter()
            .position(|path| self.at_path(within, path));
        if let Some(wanted) = wanted {
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
        match serde_json::from_slice::<Value>(&self.value) {
            Ok(value) => {
                self.values_bytes += self.value.len();
                self.values[wanted] = Some(value);
            }
            Err(_) => self.result_unreadable = true,
        }
        self.value = Vec::new();
    }

    fn keep(&mut self, byte: u8) {
        if self.capture.is_none() {
            return;
        }
        if self.value.len() == MAX_VALUE_BYTES {
            self.result_unreadable = true;
            self.capture = None;
            self.value = Vec::new();
            return;
        }
        self.value.push(byte);
    }

    /// The open result's object closed: in a document it ends here; a line ends at its end.
    fn result_closes(&mut self) -> Option<Ended> {
        if self.reading.lines {
            self.result_closed = true;
            return None;
        }
        let result = self.result.take()?;
        let values = std::mem::take(&mut self.values);
        let unreadable = std::mem::take(&mut self.result_unreadable);
        self.values_bytes = 0;
        Some(Ended {
            place: result.place,
            values: (!unreadable).then_some(values),
        })
    }

    /// JSONL: the line ended; what it gave, or `None` for a blank line.
    fn end_line(self) -> Option<Ended> {
        if !self.seen {
            return None;
        }
        // A line cut short, or with a wanted value left open, is not a whole result.
        let whole = !self.broken
            && self.result_closed
            && !self.result_unreadable
            && !self.in_string
            && self.containers.is_empty()
            && self.capture.is_none();
        Some(Ended {
            place: self.result.map_or(0, |result| result.place),
            values: whole.then_some(self.values),
        })
    }

    fn held_bytes(&self) -> usize {
        self.containers.capacity() * std::mem::size_of::<Container>()
            + self.vocabulary.capacity() * std::mem::size_of::<&str>()
            + self.key.capacity()
            + self.value.capacity()
            + self.values.capacity() * std::mem::size_of::<Option<Value>>()
            + self.values_bytes
    }
}

#[cfg(test)]
mod tests;
