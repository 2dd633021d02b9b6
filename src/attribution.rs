//! Who a request counts for, beyond its credential: what kind of bearer token it carries,
//! which Claude Code agent sent it, which project it belongs to. Pure functions over header
//! values; `x-sluice-*` headers are sluice's own and never go upstream.

/// Headers in this namespace are addressed to sluice: read, never forwarded.
pub const SLUICE_HEADER_PREFIX: &str = "x-sluice-";
/// The header a project names itself with unless `[attribution] project_header` says otherwise.
pub const DEFAULT_PROJECT_HEADER: &str = "x-sluice-project";
/// Claude Code's subagent id, and the id of the agent that started it.
pub const AGENT_HEADER: &str = "x-claude-code-agent-id";
pub const PARENT_AGENT_HEADER: &str = "x-claude-code-parent-agent-id";
/// Longer attribution values are cut to this many bytes (they are keys, not content).
pub const MAX_ATTRIBUTION_BYTES: usize = 128;

const API_KEY_PREFIX: &str = "sk-ant-api";
const OAUTH_TOKEN_PREFIX: &str = "sk-ant-oat";

/// What a bearer token is, by its shape: the official SDKs send API keys as bearer tokens too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerKind {
    /// `sk-ant-api…`: an API key (counts as `client_api_key`).
    ApiKey,
    /// `sk-ant-oat…`: a Claude subscription login (`client_oauth`).
    Oauth,
    /// Anything else (`client_bearer`).
    Other,
}

impl BearerKind {
    /// The kind of the token in an `authorization` value (`Bearer <token>`, any letter case,
    /// any run of spaces or tabs after the scheme); a value of another scheme is `Other`.
    pub fn of_authorization(value: &[u8]) -> Self {
        let token = value
            .get(..6)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer"))
            .map(|_| &value[6..])
            .filter(|rest| rest.first().is_some_and(|b| matches!(b, b' ' | b'\t')))
            .map(|rest| rest.trim_ascii_start());
        match token {
            Some(token) if token.starts_with(API_KEY_PREFIX.as_bytes()) => BearerKind::ApiKey,
            Some(token) if token.starts_with(OAUTH_TOKEN_PREFIX.as_bytes()) => BearerKind::Oauth,
            _ => BearerKind::Other,
        }
    }
}

/// Whether a header (name in any case) is sluice's own and must not be forwarded.
pub fn is_sluice_header(name: &str) -> bool {
    name.len() >= SLUICE_HEADER_PREFIX.len()
        && name.as_bytes()[..SLUICE_HEADER_PREFIX.len()]
            .eq_ignore_ascii_case(SLUICE_HEADER_PREFIX.as_bytes())
}

/// A header value as an attribution key (agent, parent agent, project): trimmed, UTF-8, no
/// control characters, cut to [`MAX_ATTRIBUTION_BYTES`] on a character boundary; `None` when
/// nothing usable is left.
pub fn attribution_key(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?.trim();
    if value.is_empty() || value.chars().any(char::is_control) {
        return None;
    }
    let mut end = value.len().min(MAX_ATTRIBUTION_BYTES);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Some(value[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_told_apart_by_shape() {
        let cases: [(&[u8], BearerKind); 9] = [
            (b"Bearer sk-ant-api03-abc", BearerKind::ApiKey),
            (b"bearer  sk-ant-api03-abc", BearerKind::ApiKey),
            (b"BEARER\tsk-ant-oat01-abc", BearerKind::Oauth),
            (b"Bearer sk-ant-oat01-abc", BearerKind::Oauth),
            (b"Bearer team-gateway-token", BearerKind::Other),
            (b"Bearer ", BearerKind::Other),
            (b"Bearersk-ant-api03-abc", BearerKind::Other),
            (b"Basic sk-ant-api03-abc", BearerKind::Other),
            (b"sk-ant-api03-abc", BearerKind::Other),
        ];
        for (value, kind) in cases {
            assert_eq!(
                BearerKind::of_authorization(value),
                kind,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn sluice_headers_are_recognised_in_any_case() {
        for name in ["x-sluice-key", "X-Sluice-Project", "x-sluice-"] {
            assert!(is_sluice_header(name), "{name}");
        }
        for name in [
            "x-sluic",
            "x-sluicex-key",
            "sluice-key",
            "x-claude-code-agent-id",
        ] {
            assert!(!is_sluice_header(name), "{name}");
        }
    }

    #[test]
    fn attribution_keys_are_trimmed_bounded_and_printable() {
        assert_eq!(
            attribution_key(b"  billing-api "),
            Some("billing-api".into())
        );
        assert_eq!(attribution_key(b""), None);
        assert_eq!(attribution_key(b"   "), None);
        assert_eq!(attribution_key(b"a\nFORGED"), None);
        assert_eq!(attribution_key(b"\xff\xfe"), None);
        let long = "é".repeat(100); // 200 bytes
        let key = attribution_key(long.as_bytes()).unwrap();
        assert_eq!(key.len(), MAX_ATTRIBUTION_BYTES);
        assert!(long.starts_with(&key));
    }
}
