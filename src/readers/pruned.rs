//! A JSON document cut down, in one pass over its bytes and without holding it, to the keys a
//! protocol reads: a copy that keeps only the named keys' values and descends into the objects
//! and arrays it is told to, so that an OpenAI `response.completed` event's `response.usage`
//! is read from beside a megabyte of `response.output`, or a Gemini chunk's
//! `candidates[].finishReason` beside its inline image, with a few hundred bytes held.

use super::bounded::BoundedBuffer;
use super::json::{decoded_key, scan_container, scan_string, MAX_JSON_VALUE_BYTES};

// Keys worth keeping are short; longer keys are skipped unread.
const MAX_KEY_BYTES: usize = 32;

/// Most bytes of one document's cut-down copy: what a protocol keeps of an event or an answer
/// is a few small objects.
pub const MAX_PRUNED_BYTES: usize = 16 * 1024;

/// A key an object's copy keeps, and how much of its value.
#[derive(Debug)]
pub struct Kept {
    pub key: &'static str,
    pub descent: Descent,
}

/// How much of a kept key's value the copy keeps.
#[derive(Debug, Clone, Copy)]
pub enum Descent {
    /// The whole value, up to [`MAX_JSON_VALUE_BYTES`] (a longer one is dropped, not cut).
    Whole,
    /// The value only when it is an object, and of it only these keys.
    Object(&'static [Kept]),
    /// The value only when it is an array, and of it only its objects, each cut down to these
    /// keys (its other elements are dropped).
    Array(&'static [Kept]),
}

impl Kept {
    /// The key's whole value.
    pub const fn value(key: &'static str) -> Self {
        Self {
            key,
            descent: Descent::Whole,
        }
    }

    /// The key's object, of which only `inside` is kept.
    pub const fn object(key: &'static str, inside: &'static [Kept]) -> Self {
        Self {
            key,
            descent: Descent::Object(inside),
        }
    }

    /// The key's array, of whose objects only `inside` is kept (Gemini's
    /// `candidates[].finishReason`).
    pub const fn array(key: &'static str, inside: &'static [Kept]) -> Self {
        Self {
            key,
            descent: Descent::Array(inside),
        }
    }
}

/// The shape of the value being scanned, which decides where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// An object or array: ends at its matching close.
    Container,
    /// Ends at its closing quote.
    String,
    /// A number, `true`, `false` or `null`: ends before the next delimiter.
    Bare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    BeforeBody,
    FirstKey,
    NextKey,
    Key,
    BeforeColon,
    BeforeValue,
    /// Just inside an array descended into: an element or its close.
    FirstElement,
    /// After a comma in an array descended into.
    NextElement,
    Value(Shape),
    AfterValue,
    /// The document ended: what was kept is complete.
    Done,
    /// Broken JSON, or bytes after the document: nothing more is read.
    Unreadable,
}

/// An object or array the copy descends into: which keys (of it, or of its objects) are kept,
/// and whether anything was written in it yet.
#[derive(Debug, Clone, Copy)]
struct Open {
    keeps: &'static [Kept],
    array: bool,
    written: bool,
}

impl Open {
    fn closer(&self) -> u8 {
        if self.array {
            b']'
        } else {
            b'}'
        }
    }
}

/// Where to cut the copy back to when the value being kept outgrows its cap.
#[derive(Debug, Clone, Copy)]
struct Mark {
    len: usize,
    written: bool,
}

/// Scans one JSON document byte by byte (depth, strings, escapes) and writes a copy of it that
/// holds only the kept keys. A top-level value that is not an object is kept whole (up to the
/// cap), so that a stream's `[DONE]` still reads as itself. Memory: the copy (at most `cap`),
/// one key, and one entry per object or array descended into (as deep as the [`Kept`] tree
/// goes).
#[derive(Debug)]
pub struct JsonPruner {
    root: &'static [Kept],
    phase: Phase,
    copy: BoundedBuffer,
    key: BoundedBuffer,
    open: Vec<Open>,
    /// The current key is kept: its entry in the innermost open object.
    kept: Option<&'static Kept>,
    /// The current value is written to the copy; where it started.
    copying: Option<Mark>,
    /// Open objects and arrays inside the current value.
    nesting: u64,
    in_string: bool,
    escaped: bool,
}

impl JsonPruner {
    /// A pruner keeping `root`'s keys of a top-level object, its copy at most `cap` bytes.
    pub fn new(root: &'static [Kept], cap: usize) -> Self {
        Self {
            root,
            phase: Phase::BeforeBody,
            copy: BoundedBuffer::new(cap),
            key: BoundedBuffer::new(MAX_KEY_BYTES),
            open: Vec::new(),
            kept: None,
            copying: None,
            nesting: 0,
            in_string: false,
            escaped: false,
        }
    }

    /// Ready for the next document, keeping what it allocated.
    pub fn reset(&mut self) {
        self.phase = Phase::BeforeBody;
        self.copy.clear();
        self.key.clear();
        self.open.clear();
        self.kept = None;
        self.copying = None;
    }

    /// Whether this pruner keeps `root`'s keys.
    pub fn keeps(&self, root: &'static [Kept]) -> bool {
        std::ptr::eq(self.root, root)
    }

    /// Feeds bytes of one document; any but whitespace after its end make it unreadable.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.read(bytes, false);
    }

    /// Feeds bytes up to the end of the document and no further (the rest belongs to what
    /// follows it); returns how many bytes it used.
    pub fn feed_document(&mut self, bytes: &[u8]) -> usize {
        self.read(bytes, true)
    }

    fn read(&mut self, bytes: &[u8], stop_at_end: bool) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            at += match self.phase {
                Phase::Key => self.read_key(&bytes[at..]),
                Phase::Value(shape) => self.read_value(shape, &bytes[at..]),
                Phase::Unreadable => return at,
                Phase::Done if stop_at_end => return at,
                _ => {
                    self.read_structure(bytes[at]);
                    1
                }
            };
        }
        at
    }

    /// The document ended (whether or not its kept parts fitted the cap).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The bytes fed are not JSON, or not one document: nothing will come of them.
    pub fn is_unreadable(&self) -> bool {
        self.phase == Phase::Unreadable
    }

    /// The cut-down copy, once the bytes fed were one whole JSON document whose kept parts
    /// fit the cap; else `None`.
    pub fn pruned(&self) -> Option<&[u8]> {
        (self.phase == Phase::Done)
            .then(|| self.copy.contents())
            .flatten()
    }

    /// The copy of a document cut short: the kept values that ended, in the objects and arrays
    /// still open, closed. `None` when nothing of an object was read or the copy outgrew its
    /// cap; the whole copy once the document ended.
    pub fn pruned_so_far(&self) -> Option<Vec<u8>> {
        if self.phase == Phase::Done {
            return self.pruned().map(<[u8]>::to_vec);
        }
        if self.phase == Phase::Unreadable || self.open.is_empty() {
            return None;
        }
        let copy = self.copy.contents()?;
        let ended = self.copying.map_or(copy.len(), |mark| mark.len);
        let mut so_far = copy[..ended].to_vec();
        so_far.extend(self.open.iter().rev().map(Open::closer));
        Some(so_far)
    }

    pub fn held_bytes(&self) -> usize {
        self.copy.held_bytes()
            + self.key.held_bytes()
            + self.open.capacity() * std::mem::size_of::<Open>()
    }

    fn in_array(&self) -> bool {
        self.open.last().is_some_and(|open| open.array)
    }

    /// One byte between keys, values and elements: whitespace, `{`, `:`, `,`, `}`, `]` or a
    /// value's start.
    fn read_structure(&mut self, byte: u8) {
        if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            return;
        }
        self.phase = match (self.phase, byte) {
            (Phase::BeforeBody, b'{') => self.open(self.root, false),
            (Phase::FirstKey | Phase::NextKey, b'"') => {
                self.key.clear();
                self.escaped = false;
                Phase::Key
            }
            (Phase::FirstKey | Phase::AfterValue, b'}') if !self.in_array() => self.close(),
            (Phase::FirstElement | Phase::AfterValue, b']') if self.in_array() => self.close(),
            (Phase::BeforeColon, b':') => Phase::BeforeValue,
            (
                Phase::BeforeBody | Phase::BeforeValue | Phase::FirstElement | Phase::NextElement,
                b',' | b':' | b'}' | b']',
            ) => Phase::Unreadable,
            (Phase::BeforeBody, _) => {
                self.copying = Some(Mark {
                    len: 0,
                    written: false,
                });
                self.start_value(byte)
            }
            (Phase::BeforeValue, _) => self.begin_value(byte),
            (Phase::FirstElement | Phase::NextElement, b'{') => self.open_element(),
            // An element that is not an object: nothing of it is kept.
            (Phase::FirstElement | Phase::NextElement, _) => self.start_value(byte),
            (Phase::AfterValue, b',') if self.in_array() => Phase::NextElement,
            (Phase::AfterValue, b',') => Phase::NextKey,
            _ => Phase::Unreadable,
        };
    }

    /// Reads key bytes up to the closing quote; returns how many bytes it used.
    fn read_key(&mut self, bytes: &[u8]) -> usize {
        let (used, closed) = scan_string(bytes, &mut self.escaped);
        self.key.push(&bytes[..used - usize::from(closed)]);
        if closed {
            let keeps = self.open.last().map_or(&[][..], |object| object.keeps);
            self.kept = self.key.contents().and_then(|raw| {
                let key = decoded_key(raw)?;
                keeps.iter().find(|kept| kept.key.as_bytes() == &key[..])
            });
            self.phase = Phase::BeforeColon;
        }
        used
    }

    /// The first byte of a key's value: descend into it, copy it, or skip it.
    fn begin_value(&mut self, first: u8) -> Phase {
        let Some(kept) = self.kept.take() else {
            return self.start_value(first);
        };
        match (kept.descent, first) {
            (Descent::Whole, _) => {
                self.copying = Some(self.write_key());
                self.start_value(first)
            }
            (Descent::Object(inside), b'{') => {
                self.write_key();
                self.open(inside, false)
            }
            (Descent::Array(inside), b'[') => {
                self.write_key();
                self.open(inside, true)
            }
            // Not the shape descended into: nothing of it is kept.
            _ => self.start_value(first),
        }
    }

    /// Writes `{` or `[` and descends into it.
    fn open(&mut self, keeps: &'static [Kept], array: bool) -> Phase {
        self.copy.push(if array { b"[" } else { b"{" });
        self.open.push(Open {
            keeps,
            array,
            written: false,
        });
        if array {
            Phase::FirstElement
        } else {
            Phase::FirstKey
        }
    }

    /// An object in an array descended into: kept, cut down like the array's other objects.
    fn open_element(&mut self) -> Phase {
        let Some(array) = self.open.last_mut() else {
            return Phase::Unreadable;
        };
        let keeps = array.keeps;
        if array.written {
            self.copy.push(b",");
        }
        array.written = true;
        self.open(keeps, false)
    }

    /// Writes `"key":` (after a comma when needed); returns where the copy stood before it.
    fn write_key(&mut self) -> Mark {
        let mark = Mark {
            len: self.copy.len(),
            written: self.open.last().is_some_and(|object| object.written),
        };
        if let Some(object) = self.open.last_mut() {
            if object.written {
                self.copy.push(b",");
            }
            object.written = true;
        }
        self.copy.push(b"\"");
        if let Some(raw) = self.key.contents() {
            self.copy.push(raw);
        }
        self.copy.push(b"\":");
        mark
    }

    fn start_value(&mut self, first: u8) -> Phase {
        self.escaped = false;
        self.in_string = false;
        self.nesting = 1;
        self.copy_value(&[first]);
        Phase::Value(match first {
            b'{' | b'[' => Shape::Container,
            b'"' => Shape::String,
            _ => Shape::Bare,
        })
    }

    /// Reads value bytes up to the value's end; returns how many bytes it used.
    fn read_value(&mut self, shape: Shape, bytes: &[u8]) -> usize {
        let (used, ended) = match shape {
            Shape::Container => self.scan_container(bytes),
            Shape::String => scan_string(bytes, &mut self.escaped),
            Shape::Bare => match bytes
                .iter()
                .position(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}' | b']'))
            {
                // The delimiter is not part of the value: leave it for `read_structure`.
                Some(end) => (end, true),
                None => (bytes.len(), false),
            },
        };
        self.copy_value(&bytes[..used]);
        if ended {
            self.copying = None;
            self.phase = if self.open.is_empty() {
                Phase::Done
            } else {
                Phase::AfterValue
            };
        }
        used
    }

    /// Appends to the kept value; one that outgrows its cap is taken out again, key and all.
    fn copy_value(&mut self, bytes: &[u8]) {
        let Some(mark) = self.copying else {
            return;
        };
        self.copy.push(bytes);
        if self.copy.len().saturating_sub(mark.len) > MAX_JSON_VALUE_BYTES {
            self.copy.truncate(mark.len);
            if let Some(object) = self.open.last_mut() {
                object.written = mark.written;
            }
            self.copying = None;
        }
    }

    fn scan_container(&mut self, bytes: &[u8]) -> (usize, bool) {
        scan_container(
            bytes,
            &mut self.nesting,
            &mut self.in_string,
            &mut self.escaped,
        )
    }

    /// Writes the close of the innermost object or array and leaves it.
    fn close(&mut self) -> Phase {
        if let Some(open) = self.open.pop() {
            self.copy.push(&[open.closer()]);
        }
        if self.open.is_empty() {
            Phase::Done
        } else {
            Phase::AfterValue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &[Kept] = &[Kept::value("usage"), Kept::value("model")];
    const EVENT: &[Kept] = &[
        Kept::value("type"),
        Kept::object("response", RESPONSE),
        Kept::value("error"),
    ];
    const CAP: usize = 16 * 1024;

    fn prune(doc: &[u8]) -> Option<String> {
        let mut pruner = JsonPruner::new(EVENT, CAP);
        pruner.feed(doc);
        pruner
            .pruned()
            .map(|copy| String::from_utf8(copy.to_vec()).unwrap())
    }

    #[test]
    fn keeps_only_the_named_keys_and_descends_where_told() {
        let doc = br#"{"type":"response.completed","sequence_number":9,"response":{"id":"r","output":[{"usage":{"input_tokens":999},"text":"}\"{"}],"usage":{"input_tokens":5},"model":"gpt-5.5"},"usage":{"ignored":1}}"#;
        assert_eq!(
            prune(doc).unwrap(),
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":5},"model":"gpt-5.5"}}"#
        );
    }

    #[test]
    fn any_split_gives_the_same_copy() {
        let doc = br#" { "response" : { "model" : "m" , "usage" : { "input_tokens" : 5 } , "x" : [ 1 , "]" ] } , "type" : "t" , "n" : null } "#;
        let whole = prune(doc).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&whole).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"response": {"model": "m", "usage": {"input_tokens": 5}}, "type": "t"})
        );
        for cut in 0..=doc.len() {
            let mut pruner = JsonPruner::new(EVENT, CAP);
            pruner.feed(&doc[..cut]);
            pruner.feed(&doc[cut..]);
            assert_eq!(pruner.pruned(), Some(whole.as_bytes()), "cut at {cut}");
        }
        let mut pruner = JsonPruner::new(EVENT, CAP);
        doc.chunks(1).for_each(|byte| pruner.feed(byte));
        assert_eq!(pruner.pruned(), Some(whole.as_bytes()));
    }

    const CANDIDATE: &[Kept] = &[Kept::value("finishReason")];
    const CHUNK: &[Kept] = &[
        Kept::array("candidates", CANDIDATE),
        Kept::value("usageMetadata"),
    ];

    fn prune_chunk(doc: &[u8]) -> Option<String> {
        let mut pruner = JsonPruner::new(CHUNK, CAP);
        pruner.feed(doc);
        pruner
            .pruned()
            .map(|copy| String::from_utf8(copy.to_vec()).unwrap())
    }

    #[test]
    fn an_array_descended_into_keeps_its_objects_cut_down() {
        let doc = br#"{"candidates":[{"content":{"parts":[{"text":"]}["}]},"finishReason":"STOP","index":0},7,"x",[{"finishReason":"NO"}],{},{"finishReason":null}],"usageMetadata":{"promptTokenCount":5}}"#;
        assert_eq!(
            prune_chunk(doc).unwrap(),
            r#"{"candidates":[{"finishReason":"STOP"},{},{"finishReason":null}],"usageMetadata":{"promptTokenCount":5}}"#
        );
        for cut in 0..=doc.len() {
            let mut pruner = JsonPruner::new(CHUNK, CAP);
            pruner.feed(&doc[..cut]);
            pruner.feed(&doc[cut..]);
            assert_eq!(
                pruner.pruned().map(<[u8]>::to_vec),
                prune_chunk(doc).map(String::into_bytes),
                "cut at {cut}"
            );
        }
        assert_eq!(
            prune_chunk(br#"{"candidates":[ ],"usageMetadata":1}"#).unwrap(),
            r#"{"candidates":[],"usageMetadata":1}"#
        );
    }

    #[test]
    fn an_array_key_that_is_not_an_array_is_dropped() {
        assert_eq!(
            prune_chunk(br#"{"candidates":{"finishReason":"STOP"},"usageMetadata":2}"#).unwrap(),
            r#"{"usageMetadata":2}"#
        );
    }

    #[test]
    fn broken_arrays_give_nothing() {
        for doc in [
            &br#"{"candidates":[{},]}"#[..],
            br#"{"candidates":[,{}]}"#,
            br#"{"candidates":[{}}"#,
            br#"{"candidates":[{}]]"#,
            br#"{"candidates":[{} {}]}"#,
        ] {
            assert_eq!(prune_chunk(doc), None, "{}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn a_document_cut_short_gives_the_values_that_ended_closed() {
        let doc = br#"{"candidates":[{"finishReason":"STOP"},{"finishReason":"MAX_TOKENS"}],"usageMetadata":{"promptTokenCount":5}}"#;
        let mut pruner = JsonPruner::new(CHUNK, CAP);
        assert_eq!(pruner.pruned_so_far(), None);
        for (at, &byte) in doc.iter().enumerate() {
            pruner.feed(&[byte]);
            let so_far = pruner.pruned_so_far().unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(&so_far)
                .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&so_far)));
            if at + 1 == doc.len() {
                assert_eq!(so_far, pruner.pruned().unwrap());
            }
            if at > 60 {
                assert_eq!(parsed["candidates"][0]["finishReason"], "STOP", "{at}");
            }
        }
    }

    #[test]
    fn feeding_a_document_stops_at_its_end() {
        let body = br#" {"usageMetadata":{"a":[1]}} , {"usageMetadata":2}"#;
        let mut pruner = JsonPruner::new(CHUNK, CAP);
        let used = pruner.feed_document(body);
        assert_eq!(&body[..used], br#" {"usageMetadata":{"a":[1]}}"#);
        assert!(pruner.is_done());
        assert_eq!(pruner.feed_document(&body[used..]), 0);
        pruner.reset();
        assert_eq!(pruner.feed_document(b"12 ,"), 2);
        assert_eq!(pruner.pruned(), Some(&b"12"[..]));
    }

    #[test]
    fn a_descended_key_that_is_not_an_object_is_dropped() {
        assert_eq!(
            prune(br#"{"response":[{"usage":1}],"type":"t"}"#).unwrap(),
            r#"{"type":"t"}"#
        );
        assert_eq!(prune(br#"{"response":null}"#).unwrap(), "{}");
    }

    #[test]
    fn a_kept_value_over_its_cap_is_dropped_whole_and_the_rest_kept() {
        let doc = format!(
            r#"{{"error":{{"message":"{}"}},"type":"t","response":{{"model":"m"}}}}"#,
            "x".repeat(MAX_JSON_VALUE_BYTES)
        );
        assert_eq!(
            prune(doc.as_bytes()).unwrap(),
            r#"{"type":"t","response":{"model":"m"}}"#
        );
    }

    #[test]
    fn a_top_level_value_other_than_an_object_is_kept_as_it_is() {
        assert_eq!(prune(b"[DONE]").unwrap(), "[DONE]");
        assert_eq!(prune(b"\"s\"").unwrap(), "\"s\"");
    }

    #[test]
    fn broken_or_unfinished_documents_give_nothing() {
        for doc in [
            &br#"{"type":"t""#[..],
            br#"{"type":}"#,
            br#"{"type":"t"} trailing"#,
            br#"{"a" 1}"#,
            b"",
        ] {
            assert_eq!(prune(doc), None, "{}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn keys_spelled_with_escapes_are_recognised() {
        assert_eq!(
            prune(br#"{"typ\u0065":"t"}"#).unwrap(),
            r#"{"typ\u0065":"t"}"#
        );
    }

    #[test]
    fn a_huge_document_is_read_within_the_cap_and_reset_reuses_the_pruner() {
        let text = "\\\"{[".repeat(256 * 1024);
        let doc = format!(
            r#"{{"type":"response.completed","response":{{"output":[{{"text":"{text}"}}],"usage":{{"input_tokens":7}}}}}}"#
        );
        let mut pruner = JsonPruner::new(EVENT, CAP);
        for _ in 0..2 {
            let mut most = 0;
            for chunk in doc.as_bytes().chunks(4099) {
                pruner.feed(chunk);
                most = most.max(pruner.held_bytes());
            }
            assert!(most < 1024, "held {most} bytes");
            assert_eq!(
                pruner.pruned().unwrap(),
                br#"{"type":"response.completed","response":{"usage":{"input_tokens":7}}}"#
            );
            pruner.reset();
        }
    }
}
