//! Who a request counts for, beyond its credential: which Claude Code agent sent it, which
//! project it belongs to. Pure functions over header values; `x-sluice-*` headers are sluice's
//! own and never go upstream.

pub mod client;

use actix_web::http::header::HeaderName;

/// Headers in this namespace are addressed to sluice: read, never forwarded.
pub const SLUICE_HEADER_PREFIX: &str = "x-sluice-";
/// The header a project names itself with unless `[attribution] project_header` says otherwise.
pub const DEFAULT_PROJECT_HEADER: &str = "x-sluice-project";
/// Claude Code's subagent id, and the id of the agent that started it.
pub const AGENT_HEADER: HeaderName = HeaderName::from_static("x-claude-code-agent-id");
pub const PARENT_AGENT_HEADER: HeaderName =
    HeaderName::from_static("x-claude-code-parent-agent-id");
/// Longer attribution values are cut to this many bytes (they are keys, not content).
pub const MAX_ATTRIBUTION_BYTES: usize = 128;

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
