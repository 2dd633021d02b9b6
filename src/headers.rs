//! Which headers cross the proxy: hop-by-hop ones (and those `connection` names) never do.

use actix_web::http::header::{self, HeaderMap, HeaderName};

/// Connection-level headers of RFC 9110 §7.6.1 plus `proxy-connection`, `proxy-authorization`
/// and `keep-alive`, which some clients still send.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Header names listed in `connection` (e.g. `connection: close, x-foo` → `x-foo`), lower-cased.
/// Without a `connection` header this is an empty `Vec`, which does not allocate.
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Keeps a header when it is end-to-end: not hop-by-hop, not listed in `connection`, and not
/// message framing (`content-length` is re-derived from the streamed body on each side).
pub fn is_end_to_end(name: &HeaderName, connection_listed: &[HeaderName]) -> bool {
    !is_hop_by_hop(name) && *name != header::CONTENT_LENGTH && !connection_listed.contains(name)
}

/// A message's declared `content-length`, if it declares a valid one.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The upstream's response headers that go back to the client, in order, repeats kept.
pub fn response_headers(
    upstream: &HeaderMap,
) -> impl Iterator<Item = (&HeaderName, &header::HeaderValue)> {
    let listed = connection_listed(upstream);
    upstream
        .iter()
        .filter(move |(name, _)| is_end_to_end(name, &listed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn connection_listed_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Drop-Me"),
        );
        headers.insert(
            HeaderName::from_static("x-drop-me"),
            HeaderValue::from_static("1"),
        );
        headers.insert(
            HeaderName::from_static("x-keep"),
            HeaderValue::from_static("1"),
        );
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let kept: Vec<_> = response_headers(&headers)
            .map(|(n, _)| n.as_str().to_string())
            .collect();
        assert_eq!(kept, vec!["x-keep".to_string()]);
    }
}
