//! Which agent or SDK sent a request (`by_client`), from the headers it identifies itself with.
//! A fixed classifier onto a closed set of names: whatever clients send, the group holds at most
//! [`CLIENTS`] keys, and no user-agent text is ever kept.

use actix_web::http::header::HeaderName;

/// The header Codex names its build with (`codex_cli_rs`, `codex_exec`, …).
pub const ORIGINATOR_HEADER: HeaderName = HeaderName::from_static("originator");
/// The header Google's SDKs name themselves in (`google-genai-sdk/1.41.0 gl-node/v22.19.0`).
pub const GOOG_API_CLIENT_HEADER: HeaderName = HeaderName::from_static("x-goog-api-client");

/// A client that identifies itself in none of the known ways.
pub const OTHER_CLIENT: &str = "other";

/// Every name [`client_of`] can give, [`OTHER_CLIENT`] last.
pub const CLIENTS: [&str; 11] = [
    "claude-code",
    "codex",
    "gemini-cli",
    "anthropic-sdk-python",
    "anthropic-sdk-node",
    "openai-sdk-python",
    "openai-sdk-node",
    "google-genai-python",
    "google-genai-node",
    "curl",
    OTHER_CLIENT,
];

/// The client named by the `user-agent`, `originator` and `x-goog-api-client` header values;
/// `None` when the request sent none of them.
///
/// The forms recognised (the first product token decides, in any case):
/// - Claude Code: `claude-cli/2.1.22 (external, cli)` (also `sdk-cli`, `sdk-ts`, …).
/// - Codex: `<originator>/<version> (<os>; <arch>) <terminal>` with the same `originator`
///   header: `codex_cli_rs`, `codex_exec`, `codex-tui`, `codex_vscode`, `codex_sdk_ts`,
///   `Codex Desktop`.
/// - Gemini CLI: `GeminiCLI/0.61.0/<model> (<os>; <arch>; …)`, `GeminiCLI-tui/0.61.0/…`.
/// - The Stainless SDKs: `<client class>/<language> <version>`: `Anthropic/Python 0.71.0`,
///   `AsyncAnthropic/Python …`, `Anthropic/JS 0.68.0`, `OpenAI/Python 2.8.1`, `OpenAI/JS 6.9.1`,
///   `AzureOpenAI/JS …`.
/// - Google's GenAI SDKs: `google-genai-sdk/1.52.0 gl-python/3.12.3` (Python appends it to the
///   user-agent; both send it as `x-goog-api-client`), `gl-node/v22.19.0` for Node.
/// - `curl/8.5.0`.
pub fn client_of(
    user_agent: Option<&[u8]>,
    originator: Option<&[u8]>,
    api_client: Option<&[u8]>,
) -> Option<&'static str> {
    if user_agent.is_none() && originator.is_none() && api_client.is_none() {
        return None;
    }
    let text = |value: Option<&[u8]>| {
        value
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default()
    };
    let (user_agent, originator, api_client) =
        (text(user_agent), text(originator), text(api_client));
    if is_codex(&originator) {
        return Some("codex");
    }
    let (product, rest) = user_agent.split_once('/').unwrap_or((&user_agent, ""));
    let product = product.trim();
    let language = rest.split_whitespace().next().unwrap_or("");
    let named = match product {
        "claude-cli" => Some("claude-code"),
        "geminicli" => Some("gemini-cli"),
        "curl" => Some("curl"),
        _ if product.starts_with("geminicli-") => Some("gemini-cli"),
        _ if is_codex(product) => Some("codex"),
        _ if is_stainless(product, "anthropic") => sdk(language, "anthropic-sdk"),
        _ if is_stainless(product, "openai") => sdk(language, "openai-sdk"),
        _ => None,
    };
    named
        .or_else(|| google_genai(&user_agent))
        .or_else(|| google_genai(&api_client))
        .or(Some(OTHER_CLIENT))
}

/// Codex's originators (`codex_cli_rs`, `codex-tui`, `codex desktop`, …), lowercased.
fn is_codex(name: &str) -> bool {
    name.strip_prefix("codex")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['_', '-', ' ']))
}

/// A Stainless client class of `vendor`: `anthropic`, `asyncanthropic`, `anthropicbedrock`,
/// `azureopenai`, `asyncazureopenai`, … (lowercased).
fn is_stainless(product: &str, vendor: &str) -> bool {
    let product = product.strip_prefix("async").unwrap_or(product);
    let product = product.strip_prefix("azure").unwrap_or(product);
    product.starts_with(vendor) && product.chars().all(|c| c.is_ascii_alphanumeric())
}

fn sdk(language: &str, family: &str) -> Option<&'static str> {
    match (family, language) {
        ("anthropic-sdk", "python") => Some("anthropic-sdk-python"),
        ("anthropic-sdk", "js") => Some("anthropic-sdk-node"),
        ("openai-sdk", "python") => Some("openai-sdk-python"),
        ("openai-sdk", "js") => Some("openai-sdk-node"),
        _ => None,
    }
}

/// `google-genai-sdk/<v> gl-python/<v>` or `… gl-node/<v>` anywhere in a header value.
fn google_genai(value: &str) -> Option<&'static str> {
    let mut tokens = value.split_whitespace();
    tokens.find(|t| t.starts_with("google-genai-sdk/"))?;
    let language = value
        .split_whitespace()
        .find_map(|t| t.strip_prefix("gl-"))?;
    if language.starts_with("python/") {
        Some("google-genai-python")
    } else if language.starts_with("node/") {
        Some("google-genai-node")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_classified_from_their_own_header_forms() {
        // (user-agent, originator, x-goog-api-client) → client
        let table: &[[Option<&str>; 4]] = &[
            [
                Some("claude-cli/2.1.22 (external, cli)"),
                None,
                None,
                Some("claude-code"),
            ],
            [
                Some("claude-cli/2.0.69 (external, sdk-ts)"),
                None,
                None,
                Some("claude-code"),
            ],
            [
                Some("codex_cli_rs/0.63.0 (Mac OS 15.1.0; arm64) iTerm.app/3.5.10"),
                Some("codex_cli_rs"),
                None,
                Some("codex"),
            ],
            [
                Some("codex_exec/0.63.0 (Ubuntu 24.4.0; x86_64) unknown"),
                None,
                None,
                Some("codex"),
            ],
            [
                Some("codex-tui/0.149.1 (Mac OS 15.5; arm64)"),
                None,
                None,
                Some("codex"),
            ],
            [
                Some("Codex Desktop/0.150.0 (Mac OS 15.5; arm64)"),
                None,
                None,
                Some("codex"),
            ],
            [
                Some("reqwest/0.12"),
                Some("codex_vscode"),
                None,
                Some("codex"),
            ],
            [
                Some("GeminiCLI/0.61.0/gemini-2.5-pro (linux; x64)"),
                None,
                Some("google-genai-sdk/1.30.0 gl-node/v22.19.0"),
                Some("gemini-cli"),
            ],
            [
                Some("GeminiCLI-tui/0.61.0/gemini-3-pro (darwin; arm64; terminal)"),
                None,
                None,
                Some("gemini-cli"),
            ],
            [
                Some("Anthropic/Python 0.71.0"),
                None,
                None,
                Some("anthropic-sdk-python"),
            ],
            [
                Some("AsyncAnthropic/Python 0.71.0"),
                None,
                None,
                Some("anthropic-sdk-python"),
            ],
            [
                Some("Anthropic/JS 0.68.0"),
                None,
                None,
                Some("anthropic-sdk-node"),
            ],
            [
                Some("OpenAI/Python 2.8.1"),
                None,
                None,
                Some("openai-sdk-python"),
            ],
            [
                Some("AsyncOpenAI/Python 2.8.1"),
                None,
                None,
                Some("openai-sdk-python"),
            ],
            [Some("OpenAI/JS 6.9.1"), None, None, Some("openai-sdk-node")],
            [
                Some("AzureOpenAI/JS 6.9.1"),
                None,
                None,
                Some("openai-sdk-node"),
            ],
            [
                Some("python-httpx/0.28 google-genai-sdk/1.52.0 gl-python/3.12.3"),
                None,
                Some("google-genai-sdk/1.52.0 gl-python/3.12.3"),
                Some("google-genai-python"),
            ],
            [
                None,
                None,
                Some("google-genai-sdk/1.41.0 gl-node/v22.19.0"),
                Some("google-genai-node"),
            ],
            [Some("curl/8.5.0"), None, None, Some("curl")],
            [
                Some("Mozilla/5.0 (X11; Linux x86_64)"),
                None,
                None,
                Some(OTHER_CLIENT),
            ],
            [Some("OpenAI/Rust 1.0"), None, None, Some(OTHER_CLIENT)],
            [
                Some("OpenAIish-clone/JS 1.0"),
                None,
                None,
                Some(OTHER_CLIENT),
            ],
            [Some("codexfoo/1.0"), None, None, Some(OTHER_CLIENT)],
            [Some(""), None, None, Some(OTHER_CLIENT)],
            [None, None, None, None],
        ];
        for [user_agent, originator, api_client, expected] in table {
            let got = client_of(
                user_agent.map(str::as_bytes),
                originator.map(str::as_bytes),
                api_client.map(str::as_bytes),
            );
            assert_eq!(
                got, *expected,
                "{user_agent:?} {originator:?} {api_client:?}"
            );
        }
    }

    #[test]
    fn any_header_value_maps_into_the_closed_set() {
        let odd: [&[u8]; 6] = [
            b"\xff\xfe/\xff",
            b"claude-cli",
            b"/",
            b"anthropic/",
            b"google-genai-sdk/ gl-",
            &[b'a'; 10_000],
        ];
        for value in odd {
            for (ua, originator, api) in [
                (Some(value), None, None),
                (None, Some(value), None),
                (None, None, Some(value)),
            ] {
                let client = client_of(ua, originator, api).unwrap();
                assert!(CLIENTS.contains(&client), "{client}");
            }
        }
    }
}
