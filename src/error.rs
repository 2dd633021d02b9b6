//! Everything sluice itself may tell a client, and the one place that maps it to an HTTP
//! status, the `x-sluice-error` kind and a body in the route's protocol's error shape
//! (Anthropic's where no route applies).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::protocol::Protocol;

/// Header naming the kind of an error that sluice produced (absent on upstream errors).
pub const SLUICE_ERROR_HEADER: &str = "x-sluice-error";
/// Header naming the quota that refused a request.
pub const SLUICE_QUOTA_HEADER: &str = "x-sluice-quota";
/// The longest `retry-after` after which clients are left to retry on their own. The Anthropic
/// SDKs sleep for any `retry-after` before retrying (the Python SDK for hours if told so) unless
/// `x-should-retry: false` says not to; Claude Code gives up by itself past 60 s.
pub const LONGEST_RETRY_WAIT_S: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the path leaves the route's prefix")]
    PathEscapes,
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("{0} is reserved for sluice's own endpoints and never forwarded")]
    ReservedPath(String),
    #[error("this endpoint answers only {0}")]
    MethodNotAllowed(&'static str),
    #[error("missing access key (send it in {0}, or as a Bearer token or x-api-key)")]
    AccessKeyMissing(String),
    #[error("unknown access key")]
    AccessKeyUnknown,
    #[error("missing or wrong admin token (send Authorization: Bearer <token>)")]
    AdminToken,
    #[error("this route sends only the server key, and none is configured")]
    NoServerKey,
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream answered with something that is not valid HTTP: {0}")]
    UpstreamBroken(String),
    #[error("upstream sent no response headers within {0} ms")]
    UpstreamTimeout(u128),
    #[error("upstream connection was not established within {0} ms")]
    ConnectTimeout(u128),
    #[error("the request body could not be read: {0}")]
    ClientBody(String),
    #[error("the request body stalled: still incomplete after {0} ms of waiting for it")]
    ClientTimeout(u128),
    #[error("`since` must be like 30m, 5h, 7d or an RFC 3339 time, not {0:?}")]
    BadSince(String),
    #[error("{0}")]
    BadUsageQuery(String),
    #[error("the store cannot answer: {0}")]
    StoreUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(
        "this address is not one sluice is known by: {0:?} (add it to [browsers] allowed_hosts)"
    )]
    UnknownHost(String),
    #[error(
        "requests from other web pages are refused (origin {0:?}; see [browsers] allowed_origins)"
    )]
    CrossSiteRequest(String),
    #[error("stopping now; the request was cut short")]
    ShuttingDown,
    /// `message` names the quota, the subject, the amounts and when it frees.
    #[error("{message}")]
    QuotaExceeded {
        quota: String,
        message: String,
        retry_after_s: u64,
    },
}

impl Error {
    /// Short machine-readable kind, sent as `x-sluice-error` and recorded in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::PathEscapes => "bad_path",
            Error::NoRoute(_) => "no_route",
            Error::ReservedPath(_) => "reserved_path",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::AccessKeyMissing(_) => "access_key_missing",
            Error::AccessKeyUnknown => "access_key_unknown",
            Error::AdminToken => "admin_token",
            Error::NoServerKey => "no_server_key",
            Error::BodyTooLarge(_) => "body_too_large",
            Error::UpstreamUnreachable(_) => "upstream_unreachable",
            Error::UpstreamBroken(_) => "upstream_broken",
            Error::UpstreamTimeout(_) | Error::ConnectTimeout(_) => "upstream_timeout",
            Error::ClientBody(_) => "client_body",
            Error::ClientTimeout(_) => "client_timeout",
            Error::BadSince(_) => "bad_since",
            Error::BadUsageQuery(_) => "bad_query",
            Error::StoreUnavailable(_) => "store_unavailable",
            Error::Internal(_) => "internal",
            Error::ShuttingDown => "shutting_down",
            Error::UnknownHost(_) => "unknown_host",
            Error::CrossSiteRequest(_) => "cross_site",
            Error::QuotaExceeded { .. } => "quota_exceeded",
        }
    }

    /// The upstream, not the client or sluice, failed the exchange.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            Error::UpstreamUnreachable(_)
                | Error::UpstreamBroken(_)
                | Error::UpstreamTimeout(_)
                | Error::ConnectTimeout(_)
        )
    }

    /// The body in Anthropic's error shape; the message says it is sluice's own.
    pub fn body(&self) -> String {
        self.body_in(Protocol::Anthropic)
    }

    /// The body in `protocol`'s error shape, so that its clients report it as their own; the
    /// message says it is sluice's.
    pub fn body_in(&self, protocol: Protocol) -> String {
        self.body_with_status(protocol, self.status_code())
    }

    fn body_with_status(&self, protocol: Protocol, status: StatusCode) -> String {
        protocol
            .api()
            .error_body(status.as_u16(), self.kind(), &format!("sluice: {self}"))
    }

    /// The status `client` (the record's `by_client` name) is told. Codex CLI waits out any
    /// `retry-after` of a 429 before retrying (it ignores `x-should-retry`) and then hides the
    /// message, while a 400 stops it at once with the message shown: a quota refusal that frees
    /// only after longer than a client should wait reads 400 to Codex, as on its WebSocket. A
    /// shorter wait stays a 429, which Codex retries after the wait. The record keeps the 429.
    pub fn status_for(&self, client: Option<&str>) -> StatusCode {
        match self {
            Error::QuotaExceeded { retry_after_s, .. }
                if client == Some("codex") && *retry_after_s > LONGEST_RETRY_WAIT_S =>
            {
                StatusCode::BAD_REQUEST
            }
            _ => self.status_code(),
        }
    }

    /// The whole answer (status, headers, body in `protocol`'s shape).
    pub fn response_in(&self, protocol: Protocol) -> HttpResponse {
        self.response_for(protocol, None)
    }

    /// The whole answer as `client` is told it (see `status_for`).
    pub fn response_for(&self, protocol: Protocol, client: Option<&str>) -> HttpResponse {
        let status = self.status_for(client);
        let mut response = HttpResponse::build(status);
        response
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header((SLUICE_ERROR_HEADER, self.kind()));
        if let Error::QuotaExceeded {
            quota,
            retry_after_s,
            ..
        } = self
        {
            response
                .insert_header((header::RETRY_AFTER, retry_after_s.to_string()))
                .insert_header((SLUICE_QUOTA_HEADER, quota.as_str()));
            if *retry_after_s > LONGEST_RETRY_WAIT_S {
                response.insert_header(("x-should-retry", "false"));
            }
        }
        if let Error::MethodNotAllowed(allowed) = self {
            response.insert_header((header::ALLOW, *allowed));
        }
        response.body(self.body_with_status(protocol, status))
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::PathEscapes
            | Error::ClientBody(_)
            | Error::BadSince(_)
            | Error::BadUsageQuery(_) => StatusCode::BAD_REQUEST,
            Error::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::NoRoute(_) | Error::ReservedPath(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::UnknownHost(_) | Error::CrossSiteRequest(_) => StatusCode::FORBIDDEN,
            Error::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::AccessKeyMissing(_)
            | Error::AccessKeyUnknown
            | Error::AdminToken
            | Error::NoServerKey => StatusCode::UNAUTHORIZED,
            Error::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UpstreamUnreachable(_) | Error::UpstreamBroken(_) => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout(_) | Error::ConnectTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Outside any route (admin endpoints, no route): Anthropic's shape.
    fn error_response(&self) -> HttpResponse {
        self.response_in(Protocol::Anthropic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_quota_wait_reads_400_to_codex_and_429_to_everyone_else() {
        let refusal = |retry_after_s| Error::QuotaExceeded {
            quota: "daily".into(),
            message: "quota daily reached".into(),
            retry_after_s,
        };
        let long = refusal(3600);
        assert_eq!(long.status_for(Some("codex")), StatusCode::BAD_REQUEST);
        assert_eq!(
            long.status_for(Some("openai-sdk-python")),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(long.status_for(None), StatusCode::TOO_MANY_REQUESTS);
        // A short wait: Codex retries after it, as for any 429.
        assert_eq!(
            refusal(LONGEST_RETRY_WAIT_S).status_for(Some("codex")),
            StatusCode::TOO_MANY_REQUESTS
        );
        // Other errors are told as they are.
        assert_eq!(
            Error::BodyTooLarge(1).status_for(Some("codex")),
            StatusCode::PAYLOAD_TOO_LARGE
        );

        let answer = long.response_for(Protocol::OpenAi, Some("codex"));
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        assert_eq!(answer.headers().get("retry-after").unwrap(), "3600");
        assert_eq!(
            answer.headers().get("x-sluice-error").unwrap(),
            "quota_exceeded"
        );
    }

    #[test]
    fn errors_have_anthropic_shape() {
        let body: serde_json::Value =
            serde_json::from_str(&Error::BodyTooLarge(10).body()).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "request_too_large");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("sluice: "));
        let response = Error::UpstreamTimeout(5).error_response();
        assert_eq!(response.status(), 504);
        assert_eq!(
            response.headers().get(SLUICE_ERROR_HEADER).unwrap(),
            "upstream_timeout"
        );
    }

    #[test]
    fn quota_refusal_is_a_rate_limit_error_with_retry_after() {
        let err = Error::QuotaExceeded {
            quota: "daily-per-person".into(),
            message: "quota daily-per-person reached for alice".into(),
            retry_after_s: 3600,
        };
        let body: serde_json::Value = serde_json::from_str(&err.body()).unwrap();
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(
            body["error"]["message"],
            "sluice: quota daily-per-person reached for alice"
        );
        let response = err.error_response();
        assert_eq!(response.status(), 429);
        let header = |name: &str| response.headers().get(name).unwrap().to_str().unwrap();
        assert_eq!(header("retry-after"), "3600");
        assert_eq!(header(SLUICE_ERROR_HEADER), "quota_exceeded");
        assert_eq!(header(SLUICE_QUOTA_HEADER), "daily-per-person");
        // An hour is too long to sleep inside a request: clients are told not to retry.
        assert_eq!(header("x-should-retry"), "false");
        let short = Error::QuotaExceeded {
            quota: "two-at-a-time".into(),
            message: "quota two-at-a-time reached".into(),
            retry_after_s: 1,
        }
        .error_response();
        assert!(short.headers().get("x-should-retry").is_none());
    }

    #[test]
    fn errors_take_the_routes_protocols_shape() {
        let err = Error::QuotaExceeded {
            quota: "daily".into(),
            message: "quota daily reached for alice".into(),
            retry_after_s: 3600,
        };
        let body: serde_json::Value = serde_json::from_str(&err.body_in(Protocol::OpenAi)).unwrap();
        assert_eq!(
            body["error"]["message"],
            "sluice: quota daily reached for alice"
        );
        assert_eq!(body["error"]["code"], "quota_exceeded");
        assert!(body["error"]["param"].is_null());
        let response = err.response_in(Protocol::OpenAi);
        assert_eq!(response.status(), 429);
        let header = |name: &str| response.headers().get(name).unwrap().to_str().unwrap();
        assert_eq!(header("retry-after"), "3600");
        assert_eq!(header("x-should-retry"), "false");
        assert_eq!(header(SLUICE_ERROR_HEADER), "quota_exceeded");
        let gemini: serde_json::Value =
            serde_json::from_str(&err.body_in(Protocol::Gemini)).unwrap();
        assert_eq!(gemini["error"]["code"], 429);
        assert_eq!(gemini["error"]["status"], "RESOURCE_EXHAUSTED");
        // A route that is not read keeps Anthropic's shape, as before.
        assert_eq!(err.body_in(Protocol::None), err.body());
    }
}
