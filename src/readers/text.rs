//! Counts the text an answer carries: the bytes of the JSON string values of the keys a protocol
//! names (Anthropic's `text`, `thinking`, `partial_json`), wherever they appear, in SSE `data`
//! lines or a JSON body alike, however the body is split. Nothing is buffered but the key being
//! read (at most [`MAX_KEY_BYTES`]). It serves one purpose: an estimate of the output tokens of
//! an answer whose own usage never arrived (see `metrics::tap`).

/// Keys longer than this are never text keys: they are not kept.
const MAX_KEY_BYTES: usize = 32;
/// Bytes of text per output token assumed by the estimate: the common average for English
/// prose and code with today's tokenizers.
pub const TEXT_BYTES_PER_TOKEN: u64 = 4;

#[derive(Debug)]
pub struct TextMeter {
    keys: &'static [&'static str],
    state: State,
    /// The string just read, while it may still turn out to be a key (`"key":`).
    key: Vec<u8>,
    key_too_long: bool,
    /// A string that ended and may be a key of interest, until the next token says.
    pending_key: Option<bool>,
    /// A `:` followed a text key: the next string is text.
    text_value_next: bool,
    bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Outside,
    /// Inside a string; `counting` when it is a text value, `escaped` after a backslash.
    InString {
        counting: bool,
        escaped: bool,
    },
}

impl TextMeter {
    pub fn new(keys: &'static [&'static str]) -> Self {
        Self {
            keys,
            state: State::Outside,
            key: Vec::new(),
            key_too_long: false,
            pending_key: None,
            text_value_next: false,
            bytes: 0,
        }
    }

    /// Bytes of text seen so far (an escape sequence counts as one byte).
    pub fn text_bytes(&self) -> u64 {
        self.bytes
    }

    /// Output tokens the text seen so far amounts to, rounded up.
    pub fn estimated_tokens(&self) -> u64 {
        self.bytes.div_ceil(TEXT_BYTES_PER_TOKEN)
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut at = 0;
        while at < chunk.len() {
            // Inside a string, every byte up to the next quote, backslash or line end is plain
            // text: taken as a run, which is most of an answer's bytes.
            if let State::InString {
                counting,
                escaped: false,
            } = self.state
            {
                let rest = &chunk[at..];
                let run = memchr::memchr3(b'"', b'\\', b'\n', rest).unwrap_or(rest.len());
                self.take_run(counting, &rest[..run]);
                at += run;
                if at == chunk.len() {
                    break;
                }
            }
            self.step(chunk[at]);
            at += 1;
        }
    }

    fn step(&mut self, byte: u8) {
        match self.state {
            State::InString { counting, escaped } => {
                if byte == b'\n' {
                    // Neither JSON strings nor SSE lines span lines: whatever was cut, start over.
                    self.state = State::Outside;
                    self.pending_key = None;
                    self.text_value_next = false;
                } else if escaped {
                    self.state = State::InString {
                        counting,
                        escaped: false,
                    };
                    self.take(counting, byte);
                } else if byte == b'\\' {
                    self.state = State::InString {
                        counting,
                        escaped: true,
                    };
                } else if byte == b'"' {
                    self.state = State::Outside;
                    self.pending_key = (!counting).then(|| {
                        !self.key_too_long && self.keys.iter().any(|k| k.as_bytes() == self.key)
                    });
                } else {
                    self.take(counting, byte);
                }
            }
            State::Outside => match byte {
                b' ' | b'\t' | b'\r' => {}
                b':' => {
                    self.text_value_next = self.pending_key.take() == Some(true);
                }
                b'"' => {
                    let counting = std::mem::take(&mut self.text_value_next);
                    self.pending_key = None;
                    self.key.clear();
                    self.key_too_long = false;
                    self.state = State::InString {
                        counting,
                        escaped: false,
                    };
                }
                _ => {
                    self.pending_key = None;
                    self.text_value_next = false;
                }
            },
        }
    }

    fn take_run(&mut self, counting: bool, run: &[u8]) {
        if counting {
            self.bytes += run.len() as u64;
        } else {
            let room = MAX_KEY_BYTES - self.key.len();
            self.key.extend_from_slice(&run[..run.len().min(room)]);
            self.key_too_long |= run.len() > room;
        }
    }

    fn take(&mut self, counting: bool, byte: u8) {
        if counting {
            self.bytes += 1;
        } else if self.key.len() < MAX_KEY_BYTES {
            self.key.push(byte);
        } else {
            self.key_too_long = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["text", "thinking", "partial_json"];

    fn count(body: &[u8]) -> u64 {
        let mut meter = TextMeter::new(KEYS);
        meter.feed(body);
        meter.text_bytes()
    }

    #[test]
    fn only_the_values_of_text_keys_count() {
        let body = concat!(
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,",
            "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there\"}}\n\n",
            "data: {\"delta\":{\"type\":\"thinking_delta\",\"thinking\" : \"hmm\"}}\n\n",
            "data: {\"delta\":{\"partial_json\":\"{\\\"a\\\":1}\"},\"text_x\":\"no\"}\n\n",
            "data: {\"message\":{\"model\":\"text\",\"content\":[]}}\n\n",
        );
        assert_eq!(count(body.as_bytes()), 11 + 3 + 7);
    }

    #[test]
    fn any_split_gives_the_same_count() {
        let body =
            b"data: {\"delta\":{\"text\":\"a \\\"quoted\\\" word\"}}\n\ndata: {\"text\":\"xyz\"}\n";
        let whole = count(body);
        assert_eq!(whole, 15 + 3);
        for cut in 0..body.len() {
            let mut meter = TextMeter::new(KEYS);
            meter.feed(&body[..cut]);
            meter.feed(&body[cut..]);
            assert_eq!(meter.text_bytes(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn runs_of_text_count_as_byte_by_byte_reading_does() {
        let long_key = format!(
            "{{\"text{}\":\"not text\",\"text\":\"yes\"}}",
            "x".repeat(40)
        );
        let body = format!(
            "data: {{\"delta\":{{\"text\":\"{}\\n\\\"q\\\" end\"}}}}\n\n{long_key}\n",
            "é…".repeat(300)
        );
        let mut byte_by_byte = TextMeter::new(KEYS);
        for byte in body.as_bytes() {
            byte_by_byte.feed(std::slice::from_ref(byte));
        }
        assert_eq!(count(body.as_bytes()), byte_by_byte.text_bytes());
        assert_eq!(byte_by_byte.text_bytes(), 300 * 5 + 8 + 3);
    }

    #[test]
    fn an_unterminated_string_ends_with_its_line() {
        let body = b"data: {\"text\":\"cut off\ndata: {\"text\":\"ok\"}\n";
        assert_eq!(count(body), 7 + 2);
    }

    #[test]
    fn the_estimate_rounds_up_to_whole_tokens() {
        let mut meter = TextMeter::new(KEYS);
        assert_eq!(meter.estimated_tokens(), 0);
        meter.feed(b"{\"text\":\"hello\"}");
        assert_eq!(meter.estimated_tokens(), 2);
    }
}
