//! What sluice reads of the Responses API over a WebSocket, as pure functions: which client
//! frames ask for a response, which server events end one, the `codex.rate_limits` event as the
//! plan-window headers it repeats, and the error event a refused response gets.

use serde::Deserialize;

/// The fields of a client frame that decide how it is metered. Everything else in the frame is
/// skipped unread (serde ignores unknown fields without keeping them).
#[derive(Debug, Default, Deserialize)]
struct ClientFields {
    #[serde(rename = "type")]
    kind: Option<String>,
    model: Option<String>,
    generate: Option<bool>,
}

/// What a client's text frame asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// `response.create`: a turn, unless `generate` is `false` (a prewarm, which makes no
    /// output and is not a turn).
    ResponseCreate { model: Option<String>, turn: bool },
    /// Anything else (`response.processed`, a frame that is not JSON, …): forwarded as is.
    Other,
}

pub fn classify_client(text: &str) -> ClientFrame {
    let Ok(fields) = serde_json::from_str::<ClientFields>(text) else {
        return ClientFrame::Other;
    };
    match fields.kind.as_deref() {
        Some("response.create") => ClientFrame::ResponseCreate {
            model: fields.model,
            turn: fields.generate != Some(false),
        },
        _ => ClientFrame::Other,
    }
}

#[derive(Debug, Default, Deserialize)]
struct ServerFields {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Where a server event leaves the response it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// The response goes on.
    Continues,
    /// `response.completed` / `response.incomplete`: the response is over.
    Ends,
    /// `response.failed` / `error`: the response is over, failed.
    Fails,
    /// `codex.rate_limits`: the plan's windows, between a response's events.
    RateLimits,
}

pub fn classify_server(text: &[u8]) -> ServerEvent {
    let kind = serde_json::from_slice::<ServerFields>(text)
        .ok()
        .and_then(|fields| fields.kind);
    match kind.as_deref() {
        Some("response.completed" | "response.incomplete") => ServerEvent::Ends,
        Some("response.failed" | "error") => ServerEvent::Fails,
        Some("codex.rate_limits") => ServerEvent::RateLimits,
        _ => ServerEvent::Continues,
    }
}

#[derive(Debug, Deserialize)]
struct RateLimitsEvent {
    rate_limits: Option<RateLimitWindows>,
}

#[derive(Debug, Deserialize)]
struct RateLimitWindows {
    primary: Option<RateLimitWindow>,
    secondary: Option<RateLimitWindow>,
}

#[derive(Debug, Deserialize)]
struct RateLimitWindow {
    used_percent: f64,
    window_minutes: Option<i64>,
    reset_at: Option<i64>,
}

/// The `codex.rate_limits` event as the `x-codex-*` headers that carry the same windows on an
/// HTTPS answer, so both reach the one reader of plan windows.
pub fn rate_limit_headers(text: &[u8]) -> Vec<(String, String)> {
    let Ok(event) = serde_json::from_slice::<RateLimitsEvent>(text) else {
        return Vec::new();
    };
    let Some(windows) = event.rate_limits else {
        return Vec::new();
    };
    let mut headers = Vec::new();
    for (family, window) in [
        ("primary", windows.primary),
        ("secondary", windows.secondary),
    ] {
        let Some(window) = window else { continue };
        let name = |field: &str| format!("x-codex-{family}-{field}");
        headers.push((name("used-percent"), window.used_percent.to_string()));
        if let Some(minutes) = window.window_minutes {
            headers.push((name("window-minutes"), minutes.to_string()));
        }
        if let Some(reset_at) = window.reset_at {
            headers.push((name("reset-at"), reset_at.to_string()));
        }
    }
    headers
}

/// The error event a response that sluice refuses gets instead of being forwarded. Its shape is
/// the one Responses WebSocket servers send (`type: error`, an HTTP-like `status`, the error,
/// and `headers`). The status reads 400, not 429: Codex stops at a 400 and shows the message,
/// while at a 429 it hides the message and retries for as long as `retry-after` says (hours,
/// for a daily quota) — the refusal's real kind is in `code` and `x-sluice-error`.
pub fn refusal_event(code: &str, message: &str, headers: &[(&str, String)]) -> String {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), serde_json::Value::from(value.as_str())))
        .collect();
    serde_json::json!({
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": format!("sluice: {message}"),
            "param": null,
        },
        "headers": headers,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_create_is_a_turn_unless_it_only_prewarms() {
        assert_eq!(
            classify_client(r#"{"type":"response.create","model":"gpt-5","input":[]}"#),
            ClientFrame::ResponseCreate {
                model: Some("gpt-5".into()),
                turn: true
            }
        );
        assert_eq!(
            classify_client(r#"{"type":"response.create","generate":false,"model":"gpt-5"}"#),
            ClientFrame::ResponseCreate {
                model: Some("gpt-5".into()),
                turn: false
            }
        );
        assert_eq!(
            classify_client(r#"{"type":"response.create","generate":true}"#),
            ClientFrame::ResponseCreate {
                model: None,
                turn: true
            }
        );
    }

    #[test]
    fn other_client_frames_are_not_turns() {
        assert_eq!(
            classify_client(r#"{"type":"response.processed","response_id":"r1"}"#),
            ClientFrame::Other
        );
        assert_eq!(classify_client("not json"), ClientFrame::Other);
        assert_eq!(classify_client("[1,2]"), ClientFrame::Other);
        assert_eq!(classify_client(r#"{"model":"gpt-5"}"#), ClientFrame::Other);
    }

    #[test]
    fn server_events_that_end_a_response() {
        let ends = |kind: &str| classify_server(format!(r#"{{"type":"{kind}"}}"#).as_bytes());
        assert_eq!(ends("response.completed"), ServerEvent::Ends);
        assert_eq!(ends("response.incomplete"), ServerEvent::Ends);
        assert_eq!(ends("response.failed"), ServerEvent::Fails);
        assert_eq!(ends("error"), ServerEvent::Fails);
        assert_eq!(ends("codex.rate_limits"), ServerEvent::RateLimits);
        assert_eq!(ends("response.created"), ServerEvent::Continues);
        assert_eq!(ends("response.output_text.delta"), ServerEvent::Continues);
        assert_eq!(classify_server(b"{"), ServerEvent::Continues);
    }

    #[test]
    fn rate_limits_event_reads_as_the_codex_headers() {
        let event = br#"{"type":"codex.rate_limits","plan_type":"plus","rate_limits":{
            "primary":{"used_percent":42.5,"window_minutes":300,"reset_at":1796000000},
            "secondary":{"used_percent":7,"window_minutes":10080}}}"#;
        assert_eq!(
            rate_limit_headers(event),
            vec![
                ("x-codex-primary-used-percent".into(), "42.5".into()),
                ("x-codex-primary-window-minutes".into(), "300".into()),
                ("x-codex-primary-reset-at".into(), "1796000000".into()),
                ("x-codex-secondary-used-percent".into(), "7".into()),
                ("x-codex-secondary-window-minutes".into(), "10080".into()),
            ]
        );
        assert!(rate_limit_headers(br#"{"type":"codex.rate_limits"}"#).is_empty());
    }

    #[test]
    fn refusal_event_carries_the_message_and_headers() {
        let event = refusal_event(
            "quota_exceeded",
            "quota daily reached for alice",
            &[("retry-after", "60".into())],
        );
        let event: serde_json::Value = serde_json::from_str(&event).unwrap();
        assert_eq!(event["type"], "error");
        assert_eq!(event["status"], 400);
        assert_eq!(event["error"]["code"], "quota_exceeded");
        assert_eq!(
            event["error"]["message"],
            "sluice: quota daily reached for alice"
        );
        assert_eq!(event["headers"]["retry-after"], "60");
    }
}
