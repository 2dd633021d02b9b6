//! Which route a path belongs to, whether it tries to leave it, and the upstream URL it maps to.

use percent_encoding::percent_decode_str;

use crate::error::Error;

/// True when `path` is `prefix` itself or lies below it (segment boundary: `/a` covers `/a/b`,
/// not `/ab`).
pub fn prefix_covers(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    path.starts_with(prefix)
        && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

/// The part of `path` below a route's `prefix` (which covers it), refused when it would leave
/// the prefix.
pub fn rest_below<'p>(prefix: &str, path: &'p str) -> Result<&'p str, Error> {
    let rest = if prefix == "/" {
        path
    } else {
        &path[prefix.len()..]
    };
    if escapes_prefix(rest) {
        return Err(Error::PathEscapes);
    }
    Ok(rest)
}

/// True when `rest` (the raw path after a route's prefix) holds a `..` segment, plainly or
/// percent-encoded (also doubly), with `/` or `\` as separators — anything an upstream could
/// resolve to a path outside the route's base.
pub fn escapes_prefix(rest: &str) -> bool {
    let mut current = std::borrow::Cow::Borrowed(rest);
    // Decode until stable (bounded): `%252e%252e` is `..` to a server that decodes twice.
    for _ in 0..3 {
        if has_dot_dot_segment(&current) {
            return true;
        }
        if !current.contains('%') {
            return false; // decoding would change nothing
        }
        let decoded = percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == *current {
            return false;
        }
        current = std::borrow::Cow::Owned(decoded);
    }
    has_dot_dot_segment(&current)
}

fn has_dot_dot_segment(path: &str) -> bool {
    path.split(['/', '\\']).any(|segment| segment == "..")
}

/// The entry of `paths` (each `/name`) that `path`'s first segment names, compared without
/// regard to letter case, after percent-decoding (repeatedly, as far as an upstream might), with
/// empty and `.` segments skipped, `\` taken as `/` and `;` parameters ignored: how an upstream
/// could read `/STATS`, `//stats`, `/%73tats` or `/stats;x` as `/stats`.
pub fn first_segment_among<'a>(path: &str, paths: &[&'a str]) -> Option<&'a str> {
    let mut current = std::borrow::Cow::Borrowed(path);
    for _ in 0..3 {
        if !current.contains('%') {
            break;
        }
        let decoded = percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        current = std::borrow::Cow::Owned(decoded);
    }
    let first = current
        .split(['/', '\\'])
        .find(|segment| !segment.is_empty() && *segment != ".")?;
    let first = first.split(';').next().unwrap_or(first);
    paths
        .iter()
        .find(|candidate| {
            candidate
                .trim_start_matches('/')
                .eq_ignore_ascii_case(first)
        })
        .copied()
}

/// `{upstream base}{rest}?{query}`: `base` has no trailing slash, `rest` is empty or starts
/// with `/`; the query string is kept byte for byte.
pub fn upstream_url(base: &str, rest: &str, query: Option<&str>) -> String {
    let mut url =
        String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
    url.push_str(base);
    if rest.is_empty() && !base_has_path(base) {
        url.push('/');
    } else {
        url.push_str(rest);
    }
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// The query string to send upstream: `query` as sent, or without its pairs whose value is
/// `removed` (a client credential the route's policy keeps from going upstream). An empty
/// result is no query at all.
pub fn upstream_query(query: Option<&str>, removed: Option<&str>) -> Option<String> {
    let query = query?;
    let Some(removed) = removed else {
        return Some(query.to_owned());
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map(|(_, value)| value) != Some(removed))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

fn base_has_path(base: &str) -> bool {
    let after_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
    after_scheme.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        assert!(prefix_covers("/anthropic", "/anthropic"));
        assert!(prefix_covers("/anthropic", "/anthropic/v1/messages"));
        assert!(!prefix_covers("/anthropic", "/anthropicx/v1"));
        assert!(!prefix_covers("/anthropic", "/other"));
        assert!(prefix_covers("/", "/v1/messages"));
    }

    #[test]
    fn dot_dot_segments_escape_in_any_encoding() {
        for rest in [
            "/../stats",
            "/v1/..",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/.%2e/x",
            "/%252e%252e/x",
            "/v1/..%2fsecret",
            "/v1/%2e%2e%2fsecret",
            "/v1\\..\\x",
        ] {
            assert!(escapes_prefix(rest), "{rest} should be refused");
        }
        for rest in [
            "",
            "/v1/messages",
            "/v1/...",
            "/v1/a..b",
            "/v1/%2e",
            "/v1/./x",
        ] {
            assert!(!escapes_prefix(rest), "{rest} should pass");
        }
    }

    #[test]
    fn upstream_url_keeps_base_path_and_query() {
        assert_eq!(
            upstream_url(
                "https://api.anthropic.com",
                "/v1/messages",
                Some("beta=true")
            ),
            "https://api.anthropic.com/v1/messages?beta=true"
        );
        assert_eq!(
            upstream_url("http://gw:8080/llm/anthropic", "/v1/messages", None),
            "http://gw:8080/llm/anthropic/v1/messages"
        );
        assert_eq!(
            upstream_url("https://api.anthropic.com", "", None),
            "https://api.anthropic.com/"
        );
        assert_eq!(
            upstream_url("http://gw/base", "", Some("a=b")),
            "http://gw/base?a=b"
        );
    }

    #[test]
    fn upstream_query_leaves_out_only_the_removed_credential() {
        assert_eq!(upstream_query(None, Some("k")), None);
        assert_eq!(
            upstream_query(Some("a=1&key=k"), None).as_deref(),
            Some("a=1&key=k")
        );
        assert_eq!(
            upstream_query(Some("a=1&key=k"), Some("k")).as_deref(),
            Some("a=1")
        );
        assert_eq!(upstream_query(Some("key=k"), Some("k")), None);
        assert_eq!(
            upstream_query(Some("key=k2&b"), Some("k")).as_deref(),
            Some("key=k2&b")
        );
    }
}
