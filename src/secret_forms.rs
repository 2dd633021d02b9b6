//! The forms in which a secret is recognised inside a header value: bare, after an auth scheme
//! (any amount of spaces or tabs), as an element of a comma- or semicolon-separated list, as the
//! value of a `name=value` pair (cookies, auth parameters), in double quotes, and as the user or
//! password of `Basic` credentials. Pure functions over bytes; the caller compares candidates.

use base64::Engine;

/// The credentials of `<scheme> 1*(SP / HTAB) <credentials>` when the scheme is `Bearer`
/// (case-insensitive, RFC 9110 §11.1). Tabs are accepted as well as spaces: a recipient that
/// read `Bearer\t<key>` as no credential at all would let the key through as an unknown value.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, credentials) = auth_scheme(value)?;
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then_some(credentials)
}

/// Calls `is_secret` on every part of `value` that could be a secret in one of the recognised
/// forms, and says whether any call returned true. Every part is visited (no early exit), so
/// the time taken does not depend on where, or whether, a secret was found.
pub fn holds_secret(value: &[u8], mut is_secret: impl FnMut(&[u8]) -> bool) -> bool {
    let mut found = false;
    let value = trim(value);
    found |= is_secret(value);
    if let Some((scheme, credentials)) = auth_scheme(value) {
        found |= is_secret(credentials);
        if scheme.eq_ignore_ascii_case(b"basic") {
            found |= basic_holds_secret(credentials, &mut is_secret);
        }
    }
    for word in value.split(|&b| matches!(b, b' ' | b'\t' | b',' | b';')) {
        if word.is_empty() {
            continue;
        }
        found |= is_secret(unquote(word));
        if let Some(eq) = word.iter().position(|&b| b == b'=') {
            found |= is_secret(unquote(&word[eq + 1..]));
        }
    }
    found
}

/// `user:password`, base64-encoded: the user, the password and the whole pair are candidates.
fn basic_holds_secret(credentials: &[u8], is_secret: &mut impl FnMut(&[u8]) -> bool) -> bool {
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
        return false;
    };
    let mut found = is_secret(&decoded);
    if let Some(colon) = decoded.iter().position(|&b| b == b':') {
        found |= is_secret(&decoded[..colon]);
        found |= is_secret(&decoded[colon + 1..]);
    }
    found
}

/// Splits `<scheme> 1*(SP / HTAB) <rest>`; `None` without whitespace after the scheme or
/// without anything after it.
fn auth_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = trim(value);
    let gap = value.iter().position(|&b| is_space(b))?;
    let (scheme, rest) = value.split_at(gap);
    let credentials = trim(rest);
    (!scheme.is_empty() && !credentials.is_empty()).then_some((scheme, credentials))
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

fn unquote(word: &[u8]) -> &[u8] {
    match word {
        [b'"', inner @ .., b'"'] => inner,
        _ => word,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-proxy-secret-1";

    fn found(value: &str) -> bool {
        holds_secret(value.as_bytes(), |part| part == KEY.as_bytes())
    }

    #[test]
    fn bearer_accepts_any_spaces_and_tabs_and_any_letter_case() {
        for value in [
            "Bearer k",
            "bearer k",
            "BEARER  k",
            "Bearer\tk",
            "Bearer \t k ",
        ] {
            assert_eq!(bearer_token(value.as_bytes()), Some(&b"k"[..]), "{value:?}");
        }
        for value in ["Bearer", "Bearer ", "Bearerk", "Basic k", " k"] {
            assert_eq!(bearer_token(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn secret_is_recognised_in_every_listed_form() {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("u:{KEY}"));
        let basic_user = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
        for value in [
            KEY.to_string(),
            format!("Bearer  {KEY}"),
            format!("bearer\t{KEY}"),
            format!("Token {KEY}"),
            format!("Basic {basic}"),
            format!("basic {basic_user}"),
            format!("{KEY}, {KEY}"),
            format!("a,{KEY};b"),
            format!("theme=dark; sluice={KEY}"),
            format!("sluice=\"{KEY}\""),
            format!("\"{KEY}\""),
            format!("Digest token=\"{KEY}\", realm=x"),
        ] {
            assert!(found(&value), "{value:?}");
        }
    }

    #[test]
    fn secret_inside_a_longer_word_or_encoded_otherwise_is_not_recognised() {
        for value in [
            format!("x{KEY}"),
            format!("{KEY}x"),
            format!("{KEY}%20"),
            KEY.to_uppercase(),
            "Basic !!!not-base64".to_string(),
            String::new(),
        ] {
            assert!(!found(&value), "{value:?}");
        }
    }

    #[test]
    fn every_part_is_visited_even_after_a_hit() {
        let mut parts = 0;
        holds_secret(format!("{KEY}, b, c").as_bytes(), |_| {
            parts += 1;
            true
        });
        assert!(parts >= 4, "{parts}");
    }
}
