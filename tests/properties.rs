//! Property tests for the pure parts: header rewriting, the credential decision, routing, the
//! usage parser and settings validation — whatever the input, they keep their promises.

use std::collections::HashMap;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use sluice::credentials::{
    decide, ClientCredentials, CredentialRules, CredentialSource, SecretMaterial,
};
use sluice::error::Error;
use sluice::headers;
use sluice::protocol::anthropic::BearerKind;
use sluice::protocol::{UsageParser, MAX_BUFFERED_BYTES};
use sluice::routing;
use sluice::settings::{CredentialPolicy, EnvSource, Settings};
use sluice::usage::AnswerFormat;

const ACCESS_KEY: &str = "sluice-test-access-key-alice-5f3e";
const ADMIN_TOKEN: &str = "sluice-test-admin-token-77aa";
const CLIENT_API_KEY: &str = "sk-ant-api03-test-client-key-0123456789";
const CLIENT_OAUTH: &str = "sk-ant-oat01-test-client-oauth-0123456789";
const SERVER_API_KEY: &str = "sk-ant-api03-test-server-key-9876543210";
const SERVER_OAUTH: &str = "sk-ant-oat01-test-server-oauth-5555";
const OAUTH_BETA: &str = "oauth-2025-04-20";

/// README "Bytes pass untouched": never forwarded in either direction (plus what `connection` lists).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

const POLICIES: [CredentialPolicy; 3] = [
    CredentialPolicy::ClientFirst,
    CredentialPolicy::ServerOnly,
    CredentialPolicy::ClientOnly,
];

/// `cases` cases, and no regression files written into the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The credential decision, against docs/clients.md "Credentials" written out independently.

/// the credentials table of docs/clients.md: (source, server key added), or `None` for a 401 from sluice.
fn spec_decision(
    policy: CredentialPolicy,
    server_key: bool,
    client: ClientCredentials,
) -> Option<(CredentialSource, bool)> {
    let client_source = match (client.api_key, client.authorization) {
        (true, _) => Some(CredentialSource::ClientApiKey),
        // A bearer token counts by what it is: an API key, a subscription login, or other.
        (false, Some(BearerKind::ApiKey)) => Some(CredentialSource::ClientApiKey),
        (false, Some(BearerKind::Oauth)) => Some(CredentialSource::ClientOauth),
        (false, Some(BearerKind::Other)) => Some(CredentialSource::ClientBearer),
        (false, None) => None,
    };
    match policy {
        CredentialPolicy::ServerOnly => server_key.then_some((CredentialSource::ServerKey, true)),
        CredentialPolicy::ClientFirst => match client_source {
            Some(source) => Some((source, false)),
            None if server_key => Some((CredentialSource::ServerKey, true)),
            None => Some((CredentialSource::None, false)),
        },
        CredentialPolicy::ClientOnly => {
            Some((client_source.unwrap_or(CredentialSource::None), false))
        }
    }
}

#[test]
fn credential_decision_matches_spec_for_every_combination() {
    let mut checked = 0;
    for policy in POLICIES {
        for server_key in [false, true] {
            for api_key in [false, true] {
                for authorization in [
                    None,
                    Some(BearerKind::ApiKey),
                    Some(BearerKind::Oauth),
                    Some(BearerKind::Other),
                ] {
                    let client = ClientCredentials {
                        api_key,
                        authorization,
                    };
                    let got = decide(policy, server_key, client);
                    match (spec_decision(policy, server_key, client), got) {
                        (Some((source, add)), Ok(decision)) => {
                            assert_eq!(
                                decision.source, source,
                                "{policy:?} {server_key} {client:?}"
                            );
                            assert_eq!(decision.add_server_key, add);
                            // Client credentials go up exactly when they are the source.
                            let client_is_source = !matches!(
                                source,
                                CredentialSource::ServerKey | CredentialSource::None
                            );
                            if client_is_source {
                                assert!(decision.forward_client);
                            }
                            if add {
                                assert!(!decision.forward_client);
                            }
                        }
                        (None, Err(Error::NoServerKey)) => {}
                        (want, got) => {
                            panic!("{policy:?} server={server_key} {client:?}: expected {want:?}, got {got:?}")
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    // 3 policies × 2 server key states × 2 x-api-key states × 4 authorization states.
    assert_eq!(checked, 48);
}

// ---------------------------------------------------------------------------------------------
// Header rewriting for the upstream request.

#[derive(Debug, Clone)]
struct Setup {
    policy: CredentialPolicy,
    server_key: Option<&'static str>,
    access: bool,
    admin: bool,
}

fn rules(setup: &Setup) -> CredentialRules {
    let mut env = HashMap::new();
    if let Some(key) = setup.server_key {
        env.insert("SK".to_string(), key.to_string());
    }
    env.insert("K_ALICE".to_string(), ACCESS_KEY.to_string());
    if setup.admin {
        env.insert("ADMIN".to_string(), ADMIN_TOKEN.to_string());
    }
    let access = if setup.access {
        "[access]\n[[access.keys]]\nname = \"alice\"\nkey_env = \"K_ALICE\"\n"
    } else {
        ""
    };
    let text = format!(
        "[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\ncredential_policy = \"{}\"\n\
         server_key_env = \"SK\"\n[admin]\ntoken_env = \"ADMIN\"\n{access}",
        setup.policy.as_str()
    );
    let env = EnvSource::Fixed(env);
    let settings = Settings::from_toml(&text, "test", &env).unwrap();
    CredentialRules::new(&settings, &SecretMaterial::read(&settings, &env).unwrap())
}

fn setups() -> impl Strategy<Value = Setup> {
    (
        prop::sample::select(POLICIES.to_vec()),
        prop::sample::select(vec![None, Some(SERVER_API_KEY), Some(SERVER_OAUTH)]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(policy, server_key, access, admin)| Setup {
            policy,
            server_key,
            access,
            admin,
        })
}

const NAMES: &[&str] = &[
    "x-api-key",
    "authorization",
    "x-sluice-key",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "anthropic-beta",
    "anthropic-version",
    "x-stainless-lang",
    "x-claude-code-session-id",
    "x-custom",
    "x-other",
];

fn header_names() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NAMES.to_vec()).prop_map(str::to_string),
        1 => "[a-z][a-z0-9-]{0,12}",
    ]
}

fn header_values() -> impl Strategy<Value = String> {
    let fixed: Vec<String> = vec![
        ACCESS_KEY.into(),
        ADMIN_TOKEN.into(),
        CLIENT_API_KEY.into(),
        format!("Bearer {CLIENT_OAUTH}"),
        format!("bearer {CLIENT_OAUTH}"),
        format!("Bearer {CLIENT_API_KEY}"),
        format!("Bearer {ACCESS_KEY}"),
        format!("BEARER {ADMIN_TOKEN}"),
        String::new(),
        "keep-alive, x-custom".into(),
        "close".into(),
        "x-other, x-api-key".into(),
        "a-beta,b-beta".into(),
        OAUTH_BETA.into(),
    ];
    prop_oneof![
        3 => prop::sample::select(fixed),
        1 => "[ -~]{0,24}",
    ]
}

fn requests() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((header_names(), header_values()), 0..14)
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn bare(value: &[u8]) -> &[u8] {
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => value,
    }
}

/// Names listed in `connection` values, lower-cased.
fn connection_listed(map: &HeaderMap) -> Vec<String> {
    map.get_all("connection")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn outbound_headers_never_carry_hop_by_hop_headers_or_proxy_secrets(
        setup in setups(),
        pairs in requests(),
    ) {
        let incoming = header_map(&pairs);
        let rules = rules(&setup);
        let listed = connection_listed(&incoming);
        let proxy_secrets_on = setup.access || setup.admin;
        let is_proxy_secret = |v: &[u8]| {
            proxy_secrets_on
                && ((setup.access && bare(v) == ACCESS_KEY.as_bytes())
                    || (setup.admin && bare(v) == ADMIN_TOKEN.as_bytes()))
        };
        // What the client sent, as the credentials table sees it: non-empty, not a proxy secret, not hop-by-hop.
        let considered = |name: &str| !listed.iter().any(|l| l == name);
        let api_key = incoming.get_all("x-api-key").any(|v| {
            considered("x-api-key") && !v.is_empty() && !is_proxy_secret(v.as_bytes())
        });
        let authorization = incoming
            .get_all("authorization")
            .find(|v| considered("authorization") && !v.is_empty() && !is_proxy_secret(v.as_bytes()))
            .map(|v| {
                let b = v.as_bytes();
                let token = (b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &b[7..]);
                match token {
                    Some(t) if t.starts_with(b"sk-ant-oat") => BearerKind::Oauth,
                    Some(t) if t.starts_with(b"sk-ant-api") => BearerKind::ApiKey,
                    _ => BearerKind::Other,
                }
            });
        let client = ClientCredentials { api_key, authorization };
        let admitted = !setup.access
            || incoming.get_all("x-sluice-key").any(|v| v.as_bytes() == ACCESS_KEY.as_bytes())
            || incoming.get_all("x-api-key").any(|v| v.as_bytes() == ACCESS_KEY.as_bytes())
            || incoming.get_all("authorization").any(|v| {
                let b = v.as_bytes();
                b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") && &b[7..] == ACCESS_KEY.as_bytes()
            });

        let result = rules.outbound(0, &actix_web::http::Method::POST, &incoming);
        if !admitted {
            prop_assert!(
                matches!(result, Err(Error::AccessKeyMissing(_)) | Err(Error::AccessKeyUnknown)),
                "{:?}", result
            );
            return Ok(());
        }
        let expected = spec_decision(setup.policy, setup.server_key.is_some(), client);
        let out = match (expected, result) {
            (None, Err(Error::NoServerKey)) => return Ok(()),
            (Some((source, _)), Ok(out)) => {
                prop_assert_eq!(out.source, source);
                out
            }
            (want, got) => {
                return Err(TestCaseError::fail(format!("expected {want:?}, got {got:?}")));
            }
        };

        for (name, value) in out.headers.iter() {
            let n = name.as_str();
            prop_assert!(!is_hop_by_hop(n), "hop-by-hop {} forwarded", n);
            prop_assert!(!["host", "content-length", "expect", "x-sluice-key"].contains(&n), "{} forwarded", n);
            // A name the client listed in `connection` never goes up from the client; only
            // sluice's own server credential may carry that name.
            if listed.iter().any(|l| l == n) {
                let own = out.source == CredentialSource::ServerKey
                    && ["x-api-key", "authorization", "anthropic-beta"].contains(&n);
                prop_assert!(own, "connection-listed {} forwarded", n);
            }
            prop_assert!(!is_proxy_secret(value.as_bytes()), "proxy secret forwarded in {}", n);
            if n == "x-api-key" || n == "authorization" {
                prop_assert!(!value.is_empty(), "empty {} forwarded", n);
            }
        }
        // The server key goes up exactly when it is the source, and alone.
        let values: Vec<&[u8]> = out.headers.iter().map(|(_, v)| v.as_bytes()).collect();
        let carries_server_key = values.iter().any(|v| {
            setup.server_key.is_some_and(|k| bare(v) == k.as_bytes())
        });
        prop_assert_eq!(carries_server_key, out.source == CredentialSource::ServerKey);
        if out.source == CredentialSource::ServerKey {
            let key = setup.server_key.unwrap();
            let credentials: Vec<(String, String)> = out.headers.iter()
                .filter(|(n, _)| *n == "x-api-key" || *n == "authorization")
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            if key.starts_with("sk-ant-oat") {
                prop_assert_eq!(credentials, vec![("authorization".to_string(), format!("Bearer {key}"))]);
                let betas: Vec<&str> = out.headers.get_all("anthropic-beta")
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .collect();
                prop_assert!(betas.contains(&OAUTH_BETA));
            } else {
                prop_assert_eq!(credentials, vec![("x-api-key".to_string(), key.to_string())]);
            }
        }
        // Every other end-to-end header arrives with all its values, in order.
        let skip = |n: &str| {
            is_hop_by_hop(n)
                || ["host", "content-length", "expect", "x-sluice-key", "x-api-key", "authorization", "anthropic-beta"].contains(&n)
                || listed.iter().any(|l| l == n)
        };
        for name in incoming.keys() {
            if skip(name.as_str()) {
                continue;
            }
            let sent: Vec<&HeaderValue> = incoming.get_all(name)
                .filter(|v| !is_proxy_secret(v.as_bytes()))
                .collect();
            let went: Vec<&HeaderValue> = out.headers.get_all(name).collect();
            prop_assert_eq!(sent, went, "values of {}", name);
        }
    }

    #[test]
    fn answer_headers_never_carry_hop_by_hop_headers(pairs in requests()) {
        let upstream = header_map(&pairs);
        let listed = connection_listed(&upstream);
        let kept: Vec<(String, Vec<u8>)> = headers::response_headers(&upstream)
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        for (name, _) in &kept {
            prop_assert!(!is_hop_by_hop(name), "hop-by-hop {} passed", name);
            prop_assert!(name != "content-length");
            prop_assert!(!listed.contains(name), "{} listed in connection", name);
        }
        // Nothing else is dropped.
        let expected: Vec<(String, Vec<u8>)> = upstream.iter()
            .filter(|(n, _)| {
                !is_hop_by_hop(n.as_str()) && n.as_str() != "content-length" && !listed.iter().any(|l| l == n.as_str())
            })
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        prop_assert_eq!(kept, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// The usage parser: arbitrary bytes, any split.

const FORMATS: [AnswerFormat; 3] = [
    AnswerFormat::EventStream,
    AnswerFormat::Json,
    AnswerFormat::Other,
];

/// Feeds `bytes` split at `cuts` (positions, any order), checking the memory bound after each.
fn parse_split(format: AnswerFormat, bytes: &[u8], cuts: &[usize]) -> sluice::usage::Answer {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut parser = UsageParser::new(format);
    let mut from = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        parser.feed(&bytes[from..cut]);
        assert!(parser.buffered_bytes() <= MAX_BUFFERED_BYTES);
        from = cut;
    }
    parser.finish()
}

/// Pieces an Anthropic event stream (or an attack on its parser) is made of.
fn sse_pieces() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<&'static [u8]> = vec![
        b"event: message_start\n",
        b"event: message_delta\r\n",
        b"event: content_block_delta\n",
        b"event: ping\n",
        b"event: error\n",
        b"data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":7}}}\n",
        b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n",
        b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":18446744073709551615}}\n",
        b"data: {\"type\":\"message_stop\"}\n",
        b"data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n",
        b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":-1}}\n",
        b"data: {\"usage\":\n",
        b"data:{\"type\":\"message_start\"}\n",
        b": comment\n",
        b"\n",
        b"\r\n",
        b"\r",
        b"data",
        b"\xEF\xBB\xBF",
        b"\xff\xfe\x00",
        b"id: 7\nretry: 10\n",
    ];
    prop_oneof![
        8 => prop::sample::select(fixed).prop_map(<[u8]>::to_vec),
        2 => prop::collection::vec(any::<u8>(), 0..40),
        1 => (1usize..3).prop_map(|n| {
            let mut big = b"data: {\"type\":\"message_delta\",\"pad\":\"".to_vec();
            big.extend(vec![b'x'; n * 40_000]);
            big.extend_from_slice(b"\",\"usage\":{\"output_tokens\":5}}\n");
            big
        }),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn usage_parser_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        for format in FORMATS {
            let _ = parse_split(format, &bytes, &cuts);
        }
    }

    #[test]
    fn usage_parser_reads_the_same_whatever_the_split(
        pieces in prop::collection::vec(sse_pieces(), 0..40),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let bytes = pieces.concat();
        for format in [AnswerFormat::EventStream, AnswerFormat::Json] {
            let whole = parse_split(format, &bytes, &[]);
            let split = parse_split(format, &bytes, &cuts);
            prop_assert_eq!(&whole, &split, "{:?} split at {:?}", format, cuts);
            // One byte at a time, the hardest split.
            let every: Vec<usize> = (0..bytes.len()).collect();
            if bytes.len() < 4096 {
                prop_assert_eq!(&whole, &parse_split(format, &bytes, &every));
            }
        }
    }

    #[test]
    fn json_answers_read_the_same_whatever_the_split(
        input in 0u64..1_000_000,
        output in 0u64..1_000_000,
        padding in 0usize..20_000,
        cuts in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let body = format!(
            "{{\"id\":\"msg\",\"content\":[{{\"type\":\"text\",\"text\":\"{}\"}}],\"model\":\"claude-sonnet-4-5\",\"usage\":{{\"input_tokens\":{input},\"output_tokens\":{output}}}}}",
            "y".repeat(padding)
        );
        let answer = parse_split(AnswerFormat::Json, body.as_bytes(), &cuts);
        prop_assert_eq!(answer.usage.input_tokens, input);
        prop_assert_eq!(answer.usage.output_tokens, output);
        prop_assert_eq!(answer.model.as_deref(), Some("claude-sonnet-4-5"));
    }
}

// ---------------------------------------------------------------------------------------------
// Routing: `..` never slips through, the upstream never changes.

fn dot_dot_segment() -> impl Strategy<Value = String> {
    let dot = prop::sample::select(vec![".", "%2e", "%2E", "%252e", "%252E"]);
    (dot.clone(), dot).prop_map(|(a, b)| {
        // Double encoding must be whole to decode twice into `..`.
        if a.starts_with("%25") != b.starts_with("%25") {
            "..".to_string()
        } else {
            format!("{a}{b}")
        }
    })
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["/", "\\", "%2f", "%2F", "%5c", "%5C"])
}

fn safe_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9_~-]{1,8}",
        1 => prop::sample::select(vec![".", "...", "a..b", "..a", "a.."]).prop_map(str::to_string),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_encoded_dot_dot_segment_escapes(
        before in prop::collection::vec(safe_segment(), 0..4),
        dots in dot_dot_segment(),
        after in prop::collection::vec(safe_segment(), 0..4),
        sep in separator(),
    ) {
        let mut rest = String::new();
        for segment in &before {
            rest.push('/');
            rest.push_str(segment);
        }
        rest.push('/');
        rest.push_str(&dots);
        for segment in &after {
            rest.push_str(sep);
            rest.push_str(segment);
        }
        prop_assert!(routing::escapes_prefix(&rest), "{} passed", rest);
    }

    #[test]
    fn paths_without_dot_dot_do_not_escape(segments in prop::collection::vec(safe_segment(), 0..6)) {
        let rest: String = segments.iter().map(|s| format!("/{s}")).collect();
        prop_assert!(!routing::escapes_prefix(&rest), "{} refused", rest);
    }

    #[test]
    fn upstream_url_always_names_the_configured_upstream(
        rest in "(/[a-zA-Z0-9@:%._~!$&'()*+,;=-]{0,12}){0,5}",
        query in proptest::option::of("[a-zA-Z0-9@:/?%._~=&-]{0,20}"),
        base_path in prop::sample::select(vec!["", "/llm", "/llm/anthropic"]),
    ) {
        let base = format!("http://upstream.test:8080{base_path}");
        let url = routing::upstream_url(&base, &rest, query.as_deref());
        prop_assert!(url.starts_with(&base));
        let parsed = url::Url::parse(&url).unwrap();
        prop_assert_eq!(parsed.host_str(), Some("upstream.test"));
        prop_assert_eq!(parsed.port(), Some(8080));
        prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
    }

    #[test]
    fn a_prefix_covers_only_whole_segments(
        prefix in "(/[a-z]{1,4}){1,2}",
        path in "(/[a-z]{0,5}){0,4}",
    ) {
        let covers = routing::prefix_covers(&prefix, &path);
        let expected = path == prefix || path.starts_with(&format!("{prefix}/"));
        prop_assert_eq!(covers, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// Settings: arbitrary text is an error, never a panic; the open-relay guard always holds.

const VALID: &str = "listen = \"127.0.0.1:4080\"\n[[routes]]\nprefix = \"/anthropic\"\nupstream = \"https://api.anthropic.com\"\n[timeouts]\nidle_ms = 1000\n[stats]\nstate_file = \"\"\n";

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn settings_never_panic_on_arbitrary_or_mangled_text(
        noise in "[ -~\n]{0,200}",
        at in any::<usize>(),
        cut in any::<usize>(),
    ) {
        let env = EnvSource::Fixed(HashMap::new());
        let _ = Settings::from_toml(&noise, "test", &env);
        let at = at % (VALID.len() + 1);
        let cut = at + cut % (VALID.len() - at + 1);
        let mangled = format!("{}{noise}{}", &VALID[..at], &VALID[cut..]);
        let _ = Settings::from_toml(&mangled, "test", &env);
    }

    #[test]
    fn a_server_key_on_a_public_address_needs_access_keys(
        octets in any::<[u8; 4]>(),
        v6 in any::<[u16; 8]>(),
        use_v6 in any::<bool>(),
        access in any::<bool>(),
        policy in prop::sample::select(POLICIES.to_vec()),
    ) {
        let ip: std::net::IpAddr = if use_v6 { v6.into() } else { octets.into() };
        let listen = std::net::SocketAddr::new(ip, 4080);
        let access_toml = if access {
            "[access]\n[[access.keys]]\nname = \"alice\"\nkey_env = \"K_ALICE\"\n"
        } else {
            ""
        };
        let text = format!(
            "listen = \"{listen}\"\n[[routes]]\nprefix = \"/anthropic\"\nupstream = \"https://api.anthropic.com\"\n\
             credential_policy = \"{}\"\nserver_key_env = \"SK\"\n[stats]\nstate_file = \"\"\n{access_toml}",
            policy.as_str()
        );
        let env = EnvSource::Fixed(HashMap::from([
            ("SK".to_string(), SERVER_API_KEY.to_string()),
            ("K_ALICE".to_string(), ACCESS_KEY.to_string()),
        ]));
        let result = Settings::from_toml(&text, "test", &env).and_then(|settings| {
            SecretMaterial::read(&settings, &env)?.refuse_open_relay(&settings)
        });
        let open_relay = !ip.is_loopback() && !access && policy != CredentialPolicy::ClientOnly;
        if open_relay {
            let err = result.err().map(|e| e.to_string()).unwrap_or_default();
            prop_assert!(err.contains("listen"), "{} accepted: {}", listen, err);
            prop_assert!(!err.contains(SERVER_API_KEY));
        } else {
            prop_assert!(result.is_ok(), "{}: {:?}", listen, result.err().map(|e| e.to_string()));
        }
    }
}
