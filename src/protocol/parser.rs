//! [`UsageParser`]: reads one answer's usage from copies of its body chunks, whatever their
//! split, in bounded memory. The protocol-free readers (`crate::readers`) frame the body; the
//! route's protocol's handler (a [`Reading`]) says what its events and values mean.
//!
//! Memory: whatever the answer's size, a parser holds at most [`MAX_BUFFERED_BYTES`].
//! - SSE: only the `data` of the event being read is buffered; events the protocol declines by
//!   name (Anthropic's `content_block_*` and `ping`) are not buffered at all, and an event whose
//!   `data` grows past the cap is skipped whole. A protocol that reads only some keys of its
//!   events (OpenAI's, Gemini's) has each event's data cut down to those as it streams by,
//!   whatever its size (`readers::pruned`).
//! - JSON: the body is scanned, not buffered; only the top-level values the protocol wants are
//!   kept, each up to [`MAX_JSON_VALUE_BYTES`] (a longer one is skipped). A protocol whose JSON
//!   answers may be a streamed array of chunks (Gemini's) has the body read as its documents,
//!   each cut down to the keys it reads (`readers::documents`).

use super::batch_results::{BatchReading, BatchResultsReader};
use super::{anthropic, gemini, openai, Protocol};
use crate::pricing::PriceTable;
use crate::readers::documents::{DocumentHandler, JsonDocumentsReader};
pub use crate::readers::json::MAX_JSON_VALUE_BYTES;
use crate::readers::json::{JsonBodyReader, ValueHandler};
use crate::readers::pruned::Kept;
use crate::readers::sse::{EventHandler, EventStreamReader};
pub use crate::readers::MAX_BUFFERED_BYTES;
use crate::usage::{Answer, AnswerFormat};

/// See [`UsageParser::answer_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerStatus {
    pub completed: bool,
    pub errored: bool,
}

/// One protocol's reading of an answer: what its SSE events and JSON values mean. Each variant
/// is a protocol module's `AnswerReading`; this enum hands the readers' callbacks to it.
#[derive(Debug)]
pub enum Reading {
    Anthropic(anthropic::AnswerReading),
    OpenAi(openai::AnswerReading),
    Gemini(gemini::AnswerReading),
}

/// A wanted top-level key, as the protocol that wants it names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadingKey {
    Anthropic(anthropic::WantedKey),
    OpenAi(openai::WantedKey),
}

impl Reading {
    pub fn answer(&self) -> &Answer {
        match self {
            Reading::Anthropic(reading) => &reading.answer,
            Reading::OpenAi(reading) => &reading.answer,
            Reading::Gemini(reading) => &reading.answer,
        }
    }

    fn answer_mut(&mut self) -> &mut Answer {
        match self {
            Reading::Anthropic(reading) => &mut reading.answer,
            Reading::OpenAi(reading) => &mut reading.answer,
            Reading::Gemini(reading) => &mut reading.answer,
        }
    }

    /// The body ended (whole or cut): what the protocol concludes from what it has not seen.
    fn on_body_end(&mut self, format: AnswerFormat) {
        if let Reading::OpenAi(reading) = self {
            reading.on_body_end(format);
        }
    }

    /// The keys of each document a JSON answer is read as, when this protocol reads its JSON
    /// answers as documents (one answer, or a streamed array of chunks) rather than by their
    /// top-level values.
    fn json_documents(&self) -> Option<&'static [Kept]> {
        match self {
            Reading::Gemini(_) => Some(gemini::json_kept_keys()),
            _ => None,
        }
    }

    /// Bytes the reading holds beside its answer.
    fn held_bytes(&self) -> usize {
        let own = match self {
            Reading::OpenAi(reading) => reading.held_bytes(),
            _ => 0,
        };
        own + self.answer().held_bytes()
    }
}

impl EventHandler for Reading {
    fn skips_data(&self, event_name: &[u8]) -> bool {
        match self {
            Reading::Anthropic(reading) => reading.skips_data(event_name),
            Reading::OpenAi(reading) => reading.skips_data(event_name),
            Reading::Gemini(reading) => reading.skips_data(event_name),
        }
    }

    fn kept_keys(&self, event_name: &[u8]) -> Option<&'static [Kept]> {
        match self {
            Reading::Anthropic(reading) => reading.kept_keys(event_name),
            Reading::OpenAi(reading) => reading.kept_keys(event_name),
            Reading::Gemini(reading) => reading.kept_keys(event_name),
        }
    }

    fn on_event(&mut self, event_name: &[u8], data: &[u8]) {
        match self {
            Reading::Anthropic(reading) => reading.on_event(event_name, data),
            Reading::OpenAi(reading) => reading.on_event(event_name, data),
            Reading::Gemini(reading) => reading.on_event(event_name, data),
        }
    }
}

impl ValueHandler for Reading {
    type Key = ReadingKey;

    fn wants(&self, key: &[u8]) -> Option<ReadingKey> {
        match self {
            Reading::Anthropic(reading) => reading.wants(key).map(ReadingKey::Anthropic),
            Reading::OpenAi(reading) => reading.wants(key).map(ReadingKey::OpenAi),
            Reading::Gemini(_) => None, // read as documents
        }
    }

    fn on_value(&mut self, key: ReadingKey, value: &[u8]) {
        match (self, key) {
            (Reading::Anthropic(reading), ReadingKey::Anthropic(key)) => {
                reading.on_value(key, value)
            }
            (Reading::OpenAi(reading), ReadingKey::OpenAi(key)) => reading.on_value(key, value),
            _ => {}
        }
    }

    fn on_end(&mut self, complete: bool) {
        match self {
            Reading::Anthropic(reading) => reading.on_end(complete),
            Reading::OpenAi(reading) => reading.on_end(complete),
            Reading::Gemini(reading) => DocumentHandler::on_end(reading, complete),
        }
    }
}

impl DocumentHandler for Reading {
    fn on_document(&mut self, document: &[u8], whole: bool) {
        if let Reading::Gemini(reading) = self {
            reading.on_document(document, whole);
        }
    }

    fn on_end(&mut self, complete: bool) {
        ValueHandler::on_end(self, complete);
    }
}

/// Reads one answer's usage from its body chunks, whatever their split, in bounded memory.
#[derive(Debug)]
pub struct UsageParser {
    format: AnswerFormat,
    reader: BodyReader,
    reading: Reading,
    finished: bool,
}

#[derive(Debug)]
enum BodyReader {
    EventStream(EventStreamReader),
    Json(JsonBodyReader<ReadingKey>),
    /// A JSON body read as its documents (see [`Reading::json_documents`]).
    JsonDocuments(JsonDocumentsReader),
    /// A batch's results (JSONL, or a document listing them), each priced as it ends.
    BatchResults(Box<BatchResultsReader>),
    Other,
}

impl UsageParser {
    /// A reader of an Anthropic answer (the first protocol sluice read).
    pub fn new(format: AnswerFormat) -> Self {
        Self::with_reading(Reading::Anthropic(Default::default()), format)
    }

    /// A reader of an answer on `protocol`, when that protocol's answers are read.
    pub fn new_for(protocol: Protocol, format: AnswerFormat) -> Option<Self> {
        let reading = protocol.api().answer_reading()?;
        Some(Self::with_reading(reading, format))
    }

    fn with_reading(reading: Reading, format: AnswerFormat) -> Self {
        let reader = match format {
            AnswerFormat::EventStream => BodyReader::EventStream(EventStreamReader::new()),
            AnswerFormat::Json => match reading.json_documents() {
                Some(kept) => BodyReader::JsonDocuments(JsonDocumentsReader::new(kept)),
                None => BodyReader::Json(JsonBodyReader::new()),
            },
            AnswerFormat::Other => BodyReader::Other,
        };
        Self {
            format,
            reader,
            reading,
            finished: false,
        }
    }

    /// A reader for a batch's results as `reading` finds them, which prices each result with
    /// `prices` at the batch rate: the answer it gives carries its cost.
    pub fn batch_results(prices: PriceTable, reading: &'static BatchReading) -> Self {
        Self {
            format: AnswerFormat::Other,
            reader: BodyReader::BatchResults(Box::new(BatchResultsReader::new(prices, reading))),
            reading: Reading::Anthropic(Default::default()),
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
            BodyReader::EventStream(reader) => reader.feed(chunk, &mut self.reading),
            BodyReader::Json(reader) => reader.feed(chunk, &mut self.reading),
            BodyReader::JsonDocuments(reader) => reader.feed(chunk, &mut self.reading),
            BodyReader::BatchResults(reader) => reader.feed(chunk),
            BodyReader::Other => {}
        }
    }

    /// Ends the body, whether it ended normally or was cut short, and tells what was learned.
    /// A last SSE event that lacks its closing blank line still counts: its bytes were sent.
    pub fn finish(&mut self) -> Answer {
        if !self.finished {
            self.finished = true;
            match &mut self.reader {
                BodyReader::EventStream(reader) => reader.finish(&mut self.reading),
                BodyReader::JsonDocuments(reader) => reader.finish(&mut self.reading),
                BodyReader::BatchResults(reader) => {
                    let results = reader.finish();
                    let answer = self.reading.answer_mut();
                    answer.usage = results.usage;
                    answer.model = results.model;
                    answer.priced_usd = Some(results.cost_usd);
                }
                _ => {}
            }
            if !matches!(self.reader, BodyReader::BatchResults(_)) {
                self.reading.on_body_end(self.format);
            }
            self.reader = BodyReader::Other; // nothing more to read: release the buffers
        }
        self.reading.answer().clone()
    }

    /// What is known so far.
    pub fn answer(&self) -> Answer {
        self.reading.answer().clone()
    }

    /// The model read so far, without copying the whole answer.
    pub fn answer_model(&self) -> Option<&str> {
        self.reading.answer().model.as_deref()
    }

    /// True for event streams and JSON: answers whose own end can be recognised.
    pub fn reads_answers(&self) -> bool {
        self.format != AnswerFormat::Other
    }

    /// Whether the answer has reached its own end so far, or reported an error.
    pub fn answer_status(&self) -> AnswerStatus {
        let answer = self.reading.answer();
        AnswerStatus {
            completed: answer.completed,
            errored: answer.error_type.is_some(),
        }
    }

    /// Bytes this parser holds now; never more than [`MAX_BUFFERED_BYTES`].
    pub fn buffered_bytes(&self) -> usize {
        let reader = match &self.reader {
            BodyReader::EventStream(reader) => reader.held_bytes(),
            BodyReader::Json(reader) => reader.held_bytes(),
            BodyReader::JsonDocuments(reader) => reader.held_bytes(),
            BodyReader::BatchResults(reader) => reader.held_bytes(),
            BodyReader::Other => 0,
        };
        reader + self.reading.held_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readers::MAX_NAME_BYTES;
    use crate::usage::{Tokens, Usage, MAX_ITERATIONS, MAX_TIER_NAME_BYTES};
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
                        ..Usage::default()
                    },
                    model: Some("claude-haiku-4-5-20251001".into()),
                    completed: true,
                    error_type: None,
                    priced_usd: None,
                    usage_missing: false,
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
                        ..Usage::default()
                    },
                    model: Some("claude-sonnet-4-5-20250929".into()),
                    completed: true,
                    error_type: None,
                    priced_usd: None,
                    usage_missing: false,
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
                    priced_usd: None,
                    usage_missing: false,
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
                        ..Usage::default()
                    },
                    model: Some("claude-sonnet-4-5-20250929".into()),
                    completed: true,
                    error_type: None,
                    priced_usd: None,
                    usage_missing: false,
                },
            },
            FixtureAnswer {
                name: "stream-thinking.sse",
                format: AnswerFormat::EventStream,
                body: fixture("stream-thinking.sse"),
                expected: Answer {
                    usage: Usage {
                        cache_creation_5m_input_tokens: Some(0),
                        cache_creation_1h_input_tokens: Some(0),
                        ..usage(1520, 612, 0, 0)
                    },
                    model: Some("claude-sonnet-4-5-20250929".into()),
                    completed: true,
                    error_type: None,
                    priced_usd: None,
                    usage_missing: false,
                },
            },
            FixtureAnswer {
                name: "stream-redacted-thinking.sse",
                format: AnswerFormat::EventStream,
                body: fixture("stream-redacted-thinking.sse"),
                expected: Answer {
                    usage: usage(310, 245, 0, 4096),
                    model: Some("claude-opus-4-1-20250805".into()),
                    completed: true,
                    error_type: None,
                    priced_usd: None,
                    usage_missing: false,
                },
            },
            FixtureAnswer {
                name: "stream-web-search.sse",
                format: AnswerFormat::EventStream,
                body: fixture("stream-web-search.sse"),
                expected: Answer {
                    // message_delta's cumulative numbers supersede message_start's 2679 / 3.
                    usage: Usage {
                        cache_creation_5m_input_tokens: Some(0),
                        cache_creation_1h_input_tokens: Some(0),
                        web_search_requests: 2,
                        inference_geo: Some("global".into()),
                        ..usage(10682, 510, 0, 0)
                    },
                    model: Some("claude-sonnet-4-6".into()),
                    completed: true,
                    error_type: None,
                    priced_usd: None,
                    usage_missing: false,
                },
            },
            FixtureAnswer {
                name: "stream-cache-split.sse",
                format: AnswerFormat::EventStream,
                body: fixture("stream-cache-split.sse"),
                expected: Answer {
                    usage: Usage {
                        cache_creation_5m_input_tokens: Some(4000),
                        cache_creation_1h_input_tokens: Some(10000),
                        inference_geo: Some("us".into()),
                        ..usage(24, 380, 14000, 0)
                    },
                    model: Some("claude-opus-4-6".into()),
                    completed: true,
                    error_type: None,
                    priced_usd: None,
                    usage_missing: false,
                },
            },
            FixtureAnswer {
                name: "message-compaction.json",
                format: AnswerFormat::Json,
                body: fixture("message-compaction.json"),
                expected: Answer {
                    // The top level says 23,000 / 1,000; with the compaction iteration the
                    // answer used 203,000 / 4,500.
                    usage: Usage {
                        inference_geo: Some("global".into()),
                        iterations: vec![
                            Tokens {
                                input_tokens: 180_000,
                                output_tokens: 3_500,
                                ..Tokens::default()
                            },
                            Tokens {
                                input_tokens: 23_000,
                                output_tokens: 1_000,
                                ..Tokens::default()
                            },
                        ],
                        ..usage(203_000, 4_500, 0, 0)
                    },
                    model: Some("claude-haiku-5-5".into()),
                    completed: true,
                    error_type: None,
                    priced_usd: None,
                    usage_missing: false,
                },
            },
            FixtureAnswer {
                name: "message-fast-us.json",
                format: AnswerFormat::Json,
                body: fixture("message-fast-us.json"),
                expected: Answer {
                    usage: Usage {
                        cache_creation_5m_input_tokens: Some(0),
                        cache_creation_1h_input_tokens: Some(0),
                        inference_geo: Some("us".into()),
                        speed: Some("fast".into()),
                        ..usage(1200, 300, 0, 8000)
                    },
                    model: Some("claude-opus-4-6".into()),
                    completed: true,
                    error_type: None,
                    priced_usd: None,
                    usage_missing: false,
                },
            },
            FixtureAnswer {
                name: "message-long-context.json",
                format: AnswerFormat::Json,
                body: fixture("message-long-context.json"),
                expected: Answer {
                    usage: usage(250_000, 2_000, 0, 0),
                    model: Some("claude-sonnet-4-5-20250929".into()),
                    completed: true,
                    error_type: None,
                    priced_usd: None,
                    usage_missing: false,
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
                    priced_usd: None,
                    usage_missing: false,
                },
            },
        ]
    }

    const FIXTURE_COUNT: usize = 12;

    #[test]
    fn fixture_count_matches_the_fixture_list() {
        assert_eq!(fixture_answers().len(), FIXTURE_COUNT);
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
    fn new_usage_fields_are_read_and_bounded() {
        let iterations: Vec<String> = (0..40)
            .map(|_| r#"{"type":"compaction","input_tokens":10,"output_tokens":1}"#.to_string())
            .collect();
        let body = format!(
            r#"{{"model":"m","usage":{{"input_tokens":1,"output_tokens":2,"server_tool_use":{{"web_search_requests":3}},"inference_geo":"us","speed":"{}","iterations":[{}]}}}}"#,
            "f".repeat(MAX_TIER_NAME_BYTES + 1),
            iterations.join(",")
        );
        let answer = read_json(&body);
        let usage = &answer.usage;
        assert_eq!(usage.web_search_requests, 3);
        assert_eq!(usage.inference_geo.as_deref(), Some("us"));
        assert_eq!(usage.speed, None, "an over-long speed is not a name");
        // 40 iterations: 16 kept, the last of them holding 25 (itself and the 24 beyond).
        assert_eq!(usage.iterations.len(), MAX_ITERATIONS);
        assert_eq!(usage.iterations[MAX_ITERATIONS - 1].input_tokens, 250);
        assert_eq!((usage.input_tokens, usage.output_tokens), (400, 40));
        assert_eq!(usage.samplings().count(), MAX_ITERATIONS);
        assert_eq!(
            read_json(r#"{"usage":{"input_tokens":5}}"#)
                .usage
                .samplings()
                .count(),
            1
        );
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
            b"data:",
            b"event: ",
            b"message_start",
            b"message_delta",
            b"error",
            b"\"usage\"",
            b"\"model\"",
            b"\"type\"",
            b"\"input_tokens\":",
            b"\xef\xbb\xbf",
        ];
        crate::protocol::fixture_reads::tricky_bytes(tokens)
    }

    proptest! {
        #[test]
        fn fixtures_cut_anywhere_into_any_chunks_give_the_same_answer(
            which in 0..FIXTURE_COUNT,
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
            which in 0..FIXTURE_COUNT,
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
