//! One span per finished request (`[otlp] traces = true`), named `{operation} {model}` and
//! carrying the GenAI conventions' usage attributes. A client's `traceparent` makes it a child
//! of the client's span; otherwise it starts a trace of its own.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};

use super::attributes::{self, double, int, string};
use super::{scope, unix_nanos};
use crate::metrics::Finished;

/// The span of one finished request. Its times are when the request arrived and finished.
pub fn request_span(finished: &Finished, provider: Option<&str>) -> Span {
    let record = &finished.record;
    let operation = attributes::operation_name(record);
    let model = record.model.as_deref().unwrap_or_default();
    let usage = &record.usage;
    let mut attrs = vec![string("gen_ai.operation.name", operation)];
    if let Some(provider) = provider {
        attrs.push(string("gen_ai.provider.name", provider));
    }
    let asked = record.request_model.as_deref().or(record.model.as_deref());
    if let Some(asked) = asked {
        attrs.push(string("gen_ai.request.model", asked));
    }
    if let (Some(model), true) = (record.model.as_deref(), record.status < 400) {
        attrs.push(string("gen_ai.response.model", model));
    }
    let tokens = [
        // The whole prompt, cached parts included, as the conventions ask.
        (
            "gen_ai.usage.input_tokens",
            usage
                .input_tokens
                .saturating_add(usage.cache_read_input_tokens)
                .saturating_add(usage.cache_creation_input_tokens),
        ),
        ("gen_ai.usage.output_tokens", usage.output_tokens),
        (
            "gen_ai.usage.cache_read.input_tokens",
            usage.cache_read_input_tokens,
        ),
        (
            "gen_ai.usage.cache_creation.input_tokens",
            usage.cache_creation_input_tokens,
        ),
    ];
    for (key, value) in tokens {
        attrs.push(int(key, value.min(i64::MAX as u64) as i64));
    }
    if let Some(session) = &record.session {
        attrs.push(string("gen_ai.conversation.id", session.as_str()));
    }
    let error_type = attributes::error_type(record);
    if let Some(error) = &error_type {
        attrs.push(string("error.type", error.as_str()));
    }
    attrs.push(int("http.response.status_code", i64::from(record.status)));
    attrs.push(double("sluice.cost", finished.cost.unwrap_or(0.0)));
    attrs.push(string("sluice.outcome", record.outcome.as_str()));
    attrs.push(string("sluice.route", record.route.as_str()));
    if let Some(source) = record.source {
        attrs.push(string("sluice.source", source.as_str()));
    }
    if let Some(caller) = &record.caller {
        attrs.push(string("sluice.caller", caller.as_str()));
    }
    if let Some(client) = record.client {
        attrs.push(string("sluice.client", client));
    }
    if !record.request_id.is_empty() {
        attrs.push(string("sluice.request_id", record.request_id.as_str()));
    }
    let ids = uuid::Uuid::new_v4();
    let (trace_id, parent_span_id) = match record.trace_parent {
        Some(parent) => (parent.trace_id.to_vec(), parent.parent_id.to_vec()),
        None => (ids.as_bytes().to_vec(), Vec::new()),
    };
    let span_id = uuid::Uuid::new_v4().as_bytes()[..8].to_vec();
    let end = record.finished_at;
    let start = end.checked_sub(record.total).unwrap_or(end);
    let name = if model.is_empty() {
        operation.to_string()
    } else {
        format!("{operation} {model}")
    };
    Span {
        trace_id,
        span_id,
        parent_span_id,
        flags: record.trace_parent.map_or(0, |p| u32::from(p.flags)),
        name,
        kind: SpanKind::Client as i32,
        start_time_unix_nano: unix_nanos(start),
        end_time_unix_nano: unix_nanos(end),
        attributes: attrs,
        status: error_type.map(|error| Status {
            message: error,
            code: StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

/// Spans as one export request.
pub fn request(resource: &Resource, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RequestRecord;
    use crate::otlp::TraceParent;
    use crate::usage::Usage;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use std::time::Duration;

    fn attribute(span: &Span, key: &str) -> Option<Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone()?.value)
    }

    #[test]
    fn a_span_carries_usage_session_and_its_clients_trace() {
        let parent = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let finished = Finished {
            record: RequestRecord {
                route: "/anthropic".into(),
                path: "/anthropic/v1/messages".into(),
                status: 200,
                model: Some("claude-sonnet-4-5-20250929".into()),
                request_model: Some("claude-sonnet-4-5".into()),
                session: Some("session-1".into()),
                caller: Some("alice".into()),
                usage: Usage {
                    input_tokens: 5,
                    output_tokens: 7,
                    cache_read_input_tokens: 100,
                    cache_creation_input_tokens: 20,
                    ..Usage::default()
                },
                total: Duration::from_millis(1500),
                trace_parent: parent,
                ..RequestRecord::default()
            },
            cost: Some(0.5),
        };
        let span = request_span(&finished, Some("anthropic"));
        assert_eq!(span.name, "chat claude-sonnet-4-5-20250929");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(
            attribute(&span, "gen_ai.usage.input_tokens"),
            Some(Value::IntValue(125))
        );
        assert_eq!(
            attribute(&span, "gen_ai.usage.output_tokens"),
            Some(Value::IntValue(7))
        );
        assert_eq!(
            attribute(&span, "gen_ai.usage.cache_read.input_tokens"),
            Some(Value::IntValue(100))
        );
        assert_eq!(
            attribute(&span, "gen_ai.conversation.id"),
            Some(Value::StringValue("session-1".into()))
        );
        assert_eq!(
            attribute(&span, "gen_ai.request.model"),
            Some(Value::StringValue("claude-sonnet-4-5".into()))
        );
        assert_eq!(
            attribute(&span, "sluice.cost"),
            Some(Value::DoubleValue(0.5))
        );
        assert_eq!(
            hex::encode(&span.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(hex::encode(&span.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(span.span_id.len(), 8);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            1_500_000_000
        );
        assert!(span.status.is_none());

        // Without a traceparent: a trace of its own, no parent.
        let mut alone = finished;
        alone.record.trace_parent = None;
        alone.record.status = 529;
        let span = request_span(&alone, Some("anthropic"));
        assert_eq!(span.trace_id.len(), 16);
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(attribute(&span, "gen_ai.response.model"), None);
    }
}
