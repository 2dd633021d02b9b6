//! The attributes sluice exports, named as the OpenTelemetry GenAI conventions name them: which
//! operation a request was (by its path), which provider (by its route's protocol), and the
//! class of error it ended with. Pure functions of a record.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

use crate::metrics::{Outcome, RequestRecord};

/// `gen_ai.operation.name` for a request, from its path below the route's prefix. The
/// conventions' well-known values where one applies; `count_tokens` and `other` are sluice's
/// own (the conventions allow custom values).
pub fn operation_name(record: &RequestRecord) -> &'static str {
    let path = record
        .path
        .strip_prefix(record.route.as_str())
        .unwrap_or(&record.path)
        .trim_end_matches('/');
    // Gemini names its methods after a colon: `/v1beta/models/gemini-2.5-pro:generateContent`.
    if let Some((_, method)) = path.rsplit_once(':') {
        return match method {
            "generateContent" | "streamGenerateContent" => "generate_content",
            "embedContent" | "batchEmbedContents" => "embeddings",
            "countTokens" => "count_tokens",
            _ => "other",
        };
    }
    if path.ends_with("/messages/count_tokens") {
        "count_tokens"
    } else if path.ends_with("/messages")
        || path.contains("/messages/batches")
        || path.ends_with("/chat/completions")
        || path.ends_with("/responses")
    {
        "chat"
    } else if path.ends_with("/complete") || path.ends_with("/completions") {
        "text_completion"
    } else if path.ends_with("/embeddings") {
        "embeddings"
    } else {
        "other"
    }
}

/// `gen_ai.provider.name` for a route's protocol: the conventions' well-known value for each
/// API sluice reads. `None` for a route whose answers are not read (`protocol = "none"`).
pub fn provider_name(protocol: &str) -> Option<String> {
    match protocol {
        "none" | "" => None,
        "gemini" => Some("gcp.gemini".into()),
        other => Some(other.to_string()),
    }
}

/// `error.type`: why the request failed, when it did. Low-cardinality by construction: how the
/// upstream failed, sluice's own refusal kind, the HTTP status, or how a stream ended early.
pub fn error_type(record: &RequestRecord) -> Option<String> {
    if let Some(failure) = record.upstream_failure {
        return Some(failure.to_string());
    }
    if let Outcome::Refused(kind) = record.outcome {
        return Some(kind.to_string());
    }
    if record.status >= 400 {
        return Some(record.status.to_string());
    }
    (record.outcome.is_error() || record.outcome.is_incomplete())
        .then(|| record.outcome.as_str().to_string())
}

pub fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

pub fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

pub fn double(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(value)),
        }),
        ..Default::default()
    }
}

pub fn boolean(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(route: &str, path: &str) -> RequestRecord {
        RequestRecord {
            route: route.into(),
            path: path.into(),
            ..RequestRecord::default()
        }
    }

    #[test]
    fn operations_follow_the_path() {
        let cases = [
            ("/anthropic", "/anthropic/v1/messages", "chat"),
            (
                "/anthropic",
                "/anthropic/v1/messages/count_tokens",
                "count_tokens",
            ),
            (
                "/anthropic",
                "/anthropic/v1/messages/batches/b1/results",
                "chat",
            ),
            ("/anthropic", "/anthropic/v1/complete", "text_completion"),
            ("/openai", "/openai/v1/chat/completions", "chat"),
            ("/openai", "/openai/v1/responses", "chat"),
            ("/openai", "/openai/v1/completions", "text_completion"),
            ("/openai", "/openai/v1/embeddings", "embeddings"),
            (
                "/gemini",
                "/gemini/v1beta/models/g:generateContent",
                "generate_content",
            ),
            (
                "/gemini",
                "/gemini/v1beta/models/g:streamGenerateContent",
                "generate_content",
            ),
            (
                "/gemini",
                "/gemini/v1beta/models/g:embedContent",
                "embeddings",
            ),
            ("/anthropic", "/anthropic/v1/models", "other"),
            // The route's prefix is not read as part of the API path.
            ("/messages", "/messages/v1/models", "other"),
        ];
        for (route, path, expected) in cases {
            assert_eq!(operation_name(&at(route, path)), expected, "{path}");
        }
    }

    #[test]
    fn providers_and_error_types() {
        assert_eq!(provider_name("anthropic").as_deref(), Some("anthropic"));
        assert_eq!(provider_name("gemini").as_deref(), Some("gcp.gemini"));
        assert_eq!(provider_name("none"), None);
        let mut record = at("/a", "/a/v1/messages");
        record.status = 200;
        assert_eq!(error_type(&record), None);
        record.status = 429;
        assert_eq!(error_type(&record).as_deref(), Some("429"));
        record.status = 200;
        record.outcome = Outcome::UpstreamCut;
        assert_eq!(error_type(&record).as_deref(), Some("upstream_cut"));
        record.upstream_failure = Some("connect");
        assert_eq!(error_type(&record).as_deref(), Some("connect"));
    }
}
