//! What sluice knows of an API's wire protocol, behind one type: how usage is read from its
//! answers (and the model from its requests). A second protocol is a new variant here and a
//! module beside `anthropic`, not edits across the request path.

use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::pricing::PriceTable;
use crate::usage::AnswerFormat;

pub mod anthropic;
pub mod batch_results;
mod parser;
mod request_model;

pub use parser::{UsageParser, MAX_BUFFERED_BYTES, MAX_JSON_VALUE_BYTES};
pub use request_model::{RequestModel, MAX_INFLATED_BYTES};

/// How usage is read from a route's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Anthropic,
    /// Forwarded and counted, but answers are not read.
    None,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::None => "none",
        }
    }
}

impl Protocol {
    /// The JSON keys whose string values are the answer's generated text, for estimating the
    /// output of an answer whose usage never came (see `readers::text`).
    pub fn text_keys(self) -> &'static [&'static str] {
        match self {
            Self::Anthropic => anthropic::TEXT_KEYS,
            Self::None => &[],
        }
    }

    /// A reader for the `model` a request asks for, when this protocol names one in its body:
    /// whatever content type the body declares, since the upstream reads it as JSON anyway.
    pub fn request_reader(self, request_headers: &HeaderMap) -> Option<RequestModel> {
        (self == Protocol::Anthropic).then(|| RequestModel::for_request(request_headers))
    }

    /// A reader for the usage in an answer of this `format`, when this protocol has usage.
    pub fn answer_reader(self, format: AnswerFormat) -> Option<UsageParser> {
        (self == Protocol::Anthropic).then(|| UsageParser::new(format))
    }

    /// A reader for the answer to this request: the results of a Message Batch, when the
    /// request fetched them and they came back (JSONL, priced line by line with `prices` at
    /// the batch rate), else as [`answer_reader`](Self::answer_reader) reads `format`. An error
    /// answer to a results request is JSON and read as one.
    pub fn answer_reader_for(
        self,
        method: &Method,
        path: &str,
        status: StatusCode,
        format: AnswerFormat,
        prices: impl FnOnce() -> PriceTable,
    ) -> Option<UsageParser> {
        let batch_results = self == Protocol::Anthropic
            && status.is_success()
            && batch_results::is_batch_results_request(method.as_str(), path);
        if batch_results {
            return Some(UsageParser::batch_results(prices()));
        }
        self.answer_reader(format)
    }
}
