//! What metering learns from an answer, whatever the API: token [`Usage`], the model, whether
//! the answer reached its own end, and an error's type; and how a body is framed
//! ([`AnswerFormat`]). Reading it is `crate::protocol`'s job.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::readers::MAX_NAME_BYTES;

/// Tokens one answer used. Field names are the `/stats` JSON names.
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

    /// Bytes the names kept hold.
    pub fn held_bytes(&self) -> usize {
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
