//! What metering learns from an answer, whatever the API: token [`Usage`], the model, whether
//! the answer reached its own end, and an error's type; and how a body is framed
//! ([`AnswerFormat`]). Reading it is `crate::protocol`'s job.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::readers::MAX_NAME_BYTES;

/// Tokens one answer used. Field names are the `/stats` JSON names.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// The part of `output_tokens` spent on reasoning (OpenAI's `reasoning_tokens`, Gemini's
    /// `thoughtsTokenCount`); 0 where the answer does not say. Priced as output.
    #[serde(skip_serializing_if = "is_zero")]
    pub reasoning_output_tokens: u64,
    /// `usage.cache_creation.ephemeral_5m_input_tokens`, when the answer gives the split
    /// (`None` = not given, which differs from a given 0 when pricing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_5m_input_tokens: Option<u64>,
    /// `usage.cache_creation.ephemeral_1h_input_tokens`, when the answer gives the split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_1h_input_tokens: Option<u64>,
    /// Web searches the server ran for the answer.
    #[serde(skip_serializing_if = "is_zero")]
    pub web_search_requests: u64,
    /// Where inference ran (`"us"`, `"global"`), which may change the price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_geo: Option<String>,
    /// The speed it ran at (`"fast"`, `"standard"`), which may change the price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<String>,
    /// The processing tier the answer says served it (OpenAI's `service_tier`: `"default"`,
    /// `"flex"`, `"priority"`, …), which may change the price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// The samplings of a compacting answer, each with its own tokens (priced one by one).
    /// When given, the token fields above are their sums.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub iterations: Vec<Tokens>,
}

/// The tokens of one sampling: a whole answer, or one of its compaction iterations.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tokens {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_5m_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_1h_input_tokens: Option<u64>,
}

/// Most compaction iterations kept one by one; later ones are added into the last kept.
pub const MAX_ITERATIONS: usize = 16;
/// Longest `inference_geo` or `speed` value kept: they are short names, not content.
pub const MAX_TIER_NAME_BYTES: usize = 32;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Tokens {
    /// Adds `other` field by field (saturating); a split given by either side stays given.
    pub fn add(&mut self, other: &Tokens) {
        let add_split = |mine: &mut Option<u64>, theirs: Option<u64>| {
            if mine.is_some() || theirs.is_some() {
                *mine = Some(mine.unwrap_or(0).saturating_add(theirs.unwrap_or(0)));
            }
        };
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(other.cache_creation_input_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
        add_split(
            &mut self.cache_creation_5m_input_tokens,
            other.cache_creation_5m_input_tokens,
        );
        add_split(
            &mut self.cache_creation_1h_input_tokens,
            other.cache_creation_1h_input_tokens,
        );
    }
}

impl Usage {
    /// The top-level token fields.
    pub fn tokens(&self) -> Tokens {
        Tokens {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_creation_input_tokens: self.cache_creation_input_tokens,
            cache_read_input_tokens: self.cache_read_input_tokens,
            cache_creation_5m_input_tokens: self.cache_creation_5m_input_tokens,
            cache_creation_1h_input_tokens: self.cache_creation_1h_input_tokens,
        }
    }

    pub fn set_tokens(&mut self, tokens: Tokens) {
        self.input_tokens = tokens.input_tokens;
        self.output_tokens = tokens.output_tokens;
        self.cache_creation_input_tokens = tokens.cache_creation_input_tokens;
        self.cache_read_input_tokens = tokens.cache_read_input_tokens;
        self.cache_creation_5m_input_tokens = tokens.cache_creation_5m_input_tokens;
        self.cache_creation_1h_input_tokens = tokens.cache_creation_1h_input_tokens;
    }

    /// Each sampling the answer was billed for: its compaction iterations, or itself.
    pub fn samplings(&self) -> impl Iterator<Item = Tokens> + '_ {
        let whole = self.iterations.is_empty().then(|| self.tokens());
        whole.into_iter().chain(self.iterations.iter().copied())
    }

    /// Keeps each iteration's tokens (the first [`MAX_ITERATIONS`] - 1 one by one, the rest
    /// added into the last) and makes the top-level fields their sums. No iterations: no change.
    pub fn set_iterations(&mut self, iterations: impl IntoIterator<Item = Tokens>) {
        let mut kept: Vec<Tokens> = Vec::new();
        for tokens in iterations {
            if kept.len() < MAX_ITERATIONS {
                kept.push(tokens);
            } else if let Some(last) = kept.last_mut() {
                last.add(&tokens);
            }
        }
        if kept.is_empty() {
            return;
        }
        let mut sum = Tokens::default();
        kept.iter().for_each(|tokens| sum.add(tokens));
        self.set_tokens(sum);
        self.iterations = kept;
    }

    /// A pricing tier's name (`inference_geo`, `speed`), when it is short enough to be one.
    pub fn tier_name(value: &str) -> Option<String> {
        (value.len() <= MAX_TIER_NAME_BYTES).then(|| value.to_owned())
    }

    /// Adds another answer's usage: token counts and searches (for summing many answers).
    pub fn add(&mut self, other: &Usage) {
        let mut tokens = self.tokens();
        tokens.add(&other.tokens());
        self.set_tokens(tokens);
        self.web_search_requests = self
            .web_search_requests
            .saturating_add(other.web_search_requests);
        self.reasoning_output_tokens = self
            .reasoning_output_tokens
            .saturating_add(other.reasoning_output_tokens);
    }

    /// Heap bytes: the tier names and the compaction iterations, both bounded.
    pub fn held_bytes(&self) -> usize {
        self.inference_geo.as_ref().map_or(0, String::capacity)
            + self.speed.as_ref().map_or(0, String::capacity)
            + self.service_tier.as_ref().map_or(0, String::capacity)
            + self.iterations.capacity() * std::mem::size_of::<Tokens>()
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
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Answer {
    pub usage: Usage,
    /// `message_start.message.model` (SSE) or the top-level `model` (JSON).
    pub model: Option<String>,
    /// `message_stop` seen (SSE), or the whole JSON body scanned to its closing brace.
    pub completed: bool,
    /// The `error` event's `error.type` (SSE), or the JSON error body's `error.type`.
    pub error_type: Option<String>,
    /// The cost, when the reader worked it out itself: a batch's results are priced
    /// result by result (each one's own model and long-context check) at the batch rate.
    pub priced_usd: Option<f64>,
    /// The answer ended without the usage its protocol sends at the end (a Chat Completions
    /// stream whose request did not ask for `stream_options.include_usage`): its tokens are
    /// unknown, not zero.
    pub usage_missing: bool,
}

impl Answer {
    pub fn set_model(&mut self, model: Option<&Value>) {
        if let Some(model) = bounded_name(model) {
            self.model = Some(model);
        }
    }

    pub fn set_error_type(&mut self, error: Option<&Value>) {
        if let Some(error_type) = bounded_name(error.and_then(|error| error.get("type"))) {
            self.error_type = Some(error_type);
        }
    }

    /// Bytes the names and usage kept hold.
    pub fn held_bytes(&self) -> usize {
        self.model.as_ref().map_or(0, String::capacity)
            + self.error_type.as_ref().map_or(0, String::capacity)
            + self.usage.held_bytes()
    }
}

fn bounded_name(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .filter(|name| name.len() <= MAX_NAME_BYTES)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_usage_sums_reasoning_tokens_and_saturates() {
        let mut sum = Usage {
            output_tokens: 10,
            reasoning_output_tokens: 4,
            ..Usage::default()
        };
        sum.add(&Usage {
            output_tokens: 5,
            reasoning_output_tokens: 3,
            ..Usage::default()
        });
        assert_eq!((sum.output_tokens, sum.reasoning_output_tokens), (15, 7));
        sum.add(&Usage {
            reasoning_output_tokens: u64::MAX,
            ..Usage::default()
        });
        assert_eq!(sum.reasoning_output_tokens, u64::MAX);
    }
}
