//! Server-sent events, read after the WHATWG event-stream rules: `\n`, `\r\n` and `\r` line
//! ends, multi-line data, comments, a leading byte-order mark. Events go to an
//! [`EventHandler`], which may decline an event's data by its name before any of it is held,
//! or ask for only some keys of its JSON data, read through a [`JsonPruner`] as it streams by.

use super::bounded::BoundedBuffer;
use super::pruned::{JsonPruner, Kept, MAX_PRUNED_BYTES};
use super::{MAX_BUFFERED_BYTES, MAX_NAME_BYTES};

// Field names acted on are "data" and "event"; anything longer is ignored unread.
const MAX_FIELD_NAME_BYTES: usize = 16;
const MAX_EVENT_NAME_BYTES: usize = 64;
const MAX_EVENT_DATA_BYTES: usize =
    MAX_BUFFERED_BYTES - MAX_FIELD_NAME_BYTES - MAX_EVENT_NAME_BYTES - 2 * MAX_NAME_BYTES;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What the protocol does with the events of a stream.
pub trait EventHandler {
    /// True for events that never carry anything wanted: their data is not buffered at all.
    fn skips_data(&self, event_name: &[u8]) -> bool;
    /// The keys of the event's JSON data the handler reads, when it reads only those: the
    /// data then streams through a [`JsonPruner`] and [`on_event`](Self::on_event) gets the
    /// cut-down copy, so an event of any size is read in bounded memory. `None` (the default):
    /// the data is buffered whole, up to the cap. Asked when the event's first `data` line
    /// starts.
    fn kept_keys(&self, _event_name: &[u8]) -> Option<&'static [Kept]> {
        None
    }
    /// One whole event: its `event:` name (empty when none) and its data, lines joined by
    /// `\n` (or the copy of its kept keys). An event whose data (or copy) passed the cap is
    /// skipped whole, never handed over cut.
    fn on_event(&mut self, event_name: &[u8], data: &[u8]);
}

/// Where an event's data goes while it is read.
#[derive(Debug)]
enum EventData {
    /// Buffered as it is.
    Whole(BoundedBuffer),
    /// Cut down to the handler's kept keys as it streams by.
    Pruned(Box<JsonPruner>),
}

impl EventData {
    fn push(&mut self, bytes: &[u8]) {
        match self {
            Self::Whole(buffer) => buffer.push(bytes),
            Self::Pruned(pruner) => pruner.feed(bytes),
        }
    }

    fn contents(&self) -> Option<&[u8]> {
        match self {
            Self::Whole(buffer) => buffer
                .contents()
                .map(|data| data.strip_suffix(b"\n").unwrap_or(data)),
            Self::Pruned(pruner) => pruner.pruned(),
        }
    }

    fn clear(&mut self) {
        match self {
            Self::Whole(buffer) => buffer.clear(),
            Self::Pruned(pruner) => pruner.reset(),
        }
    }

    /// Gives back the memory of a buffer that holds no event now.
    fn release(&mut self) {
        if let Self::Whole(buffer) = self {
            buffer.release();
        }
    }

    /// Gets ready for an event whose data the handler wants whole (`None`) or cut down: the
    /// other kind's buffer is released, so only one is ever held.
    fn prepare(&mut self, kept: Option<&'static [Kept]>) {
        match (&mut *self, kept) {
            (Self::Whole(_), None) => {}
            (Self::Pruned(pruner), Some(kept)) if pruner.keeps(kept) => {}
            (_, None) => *self = Self::Whole(BoundedBuffer::new(MAX_EVENT_DATA_BYTES)),
            (_, Some(kept)) => {
                *self = Self::Pruned(Box::new(JsonPruner::new(kept, MAX_PRUNED_BYTES)))
            }
        }
    }

    fn held_bytes(&self) -> usize {
        match self {
            Self::Whole(buffer) => buffer.held_bytes(),
            Self::Pruned(pruner) => std::mem::size_of::<JsonPruner>() + pruner.held_bytes(),
        }
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

/// An SSE reader fed bytes rather than lines, so that no line is ever held whole: field values
/// stream straight into the buffer that wants them.
#[derive(Debug)]
pub struct EventStreamReader {
    phase: SseLinePhase,
    field_name: BoundedBuffer,
    /// The previous byte was `\r`: a `\n` right after it ends no second line.
    after_cr: bool,
    /// No line has ended yet (a UTF-8 BOM may only stand at the very start).
    on_first_line: bool,
    event_name: BoundedBuffer,
    data: EventData,
    /// A `data` field was seen in the event being read.
    has_data: bool,
}

impl EventStreamReader {
    pub const fn new() -> Self {
        Self {
            phase: SseLinePhase::FieldName,
            field_name: BoundedBuffer::new(MAX_FIELD_NAME_BYTES),
            after_cr: false,
            on_first_line: true,
            event_name: BoundedBuffer::new(MAX_EVENT_NAME_BYTES),
            data: EventData::Whole(BoundedBuffer::new(MAX_EVENT_DATA_BYTES)),
            has_data: false,
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8], handler: &mut impl EventHandler) {
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
                    self.read_line_part(&bytes[..end], handler);
                    self.after_cr = bytes[end] == b'\r';
                    self.end_line(handler);
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.read_line_part(bytes, handler);
                    break;
                }
            }
        }
        // A chunk that ended between events leaves no event data held: a long stream waits
        // seconds between its events, and with thousands open the last event's buffer kept
        // for each (its size, ~0.7 KB) added up. The next event allocates again, so this
        // costs an allocation per chunk at most.
        if !self.has_data {
            self.data.release();
        }
    }

    pub fn finish(&mut self, handler: &mut impl EventHandler) {
        if self.phase != SseLinePhase::FieldName || self.field_name.is_used() {
            self.end_line(handler);
        }
        self.dispatch(handler);
    }

    /// Reads bytes of the current line (no line end among them).
    fn read_line_part(&mut self, mut part: &[u8], handler: &impl EventHandler) {
        while !part.is_empty() {
            match self.phase {
                SseLinePhase::FieldName => match part.iter().position(|&b| b == b':') {
                    Some(colon) => {
                        self.field_name.push(&part[..colon]);
                        self.phase = SseLinePhase::ValueStart(self.take_field(handler));
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

    fn end_line(&mut self, handler: &mut impl EventHandler) {
        match self.phase {
            SseLinePhase::FieldName if !self.field_name.is_used() => self.dispatch(handler),
            // A line without a colon is a field name with an empty value.
            SseLinePhase::FieldName => {
                let field = self.take_field(handler);
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
    fn take_field(&mut self, handler: &impl EventHandler) -> SseField {
        let name = self.field_name.contents().map(|name| {
            if self.on_first_line {
                name.strip_prefix(UTF8_BOM).unwrap_or(name)
            } else {
                name
            }
        });
        let field = match name {
            Some(b"data") => {
                let first = !self.has_data;
                self.has_data = true;
                if self.skips_data(handler) {
                    SseField::Ignored
                } else {
                    if first {
                        let event_name = self.event_name.contents().unwrap_or_default();
                        self.data.prepare(handler.kept_keys(event_name));
                    }
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

    /// The handler needs nothing of this event: its data is not even buffered.
    fn skips_data(&self, handler: &impl EventHandler) -> bool {
        self.event_name
            .contents()
            .is_some_and(|name| handler.skips_data(name))
    }

    /// A blank line ends the event: hand it over unless skipped, then start afresh.
    fn dispatch(&mut self, handler: &mut impl EventHandler) {
        if self.has_data && !self.skips_data(handler) {
            if let Some(data) = self.data.contents() {
                let event_name = self.event_name.contents().unwrap_or_default();
                handler.on_event(event_name, data);
            }
        }
        self.data.clear();
        self.event_name.clear();
        self.has_data = false;
    }

    pub fn held_bytes(&self) -> usize {
        self.field_name.held_bytes() + self.event_name.held_bytes() + self.data.held_bytes()
    }
}

impl Default for EventStreamReader {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps every event's data whole.
    #[derive(Default)]
    struct Collected(Vec<Vec<u8>>);

    impl EventHandler for Collected {
        fn skips_data(&self, _: &[u8]) -> bool {
            false
        }

        fn on_event(&mut self, _: &[u8], data: &[u8]) {
            self.0.push(data.to_vec());
        }
    }

    #[test]
    fn a_chunk_that_ends_between_events_leaves_no_event_data_held() {
        let mut reader = EventStreamReader::new();
        let mut events = Collected::default();
        let data = "x".repeat(300);
        reader.feed(format!("event: a\ndata: {data}").as_bytes(), &mut events);
        assert!(
            reader.data.held_bytes() >= 300,
            "mid-event: the data is held"
        );
        reader.feed(b"\n\n", &mut events);
        assert_eq!(reader.data.held_bytes(), 0, "between events: nothing held");
        reader.feed(format!("data: {data}\n\n").as_bytes(), &mut events);
        assert_eq!(events.0, vec![data.as_bytes().to_vec(); 2]);
        assert_eq!(reader.data.held_bytes(), 0);
    }
}
