//! sluice's own paths ([`ADMIN_PATHS`]) and everything below them are never forwarded, whatever the method, letter case or spelling: a catch-all route (`/`)
//! would otherwise send `POST /stats` or `/STATS` upstream with the server key.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

use crate::error::Error;
use crate::routing;
use crate::settings::ADMIN_PATHS;

/// The endpoint that also serves files below it (and answers 404 for unknown ones itself).
const SERVES_FILES: &str = "/dashboard";
/// What every endpoint answers.
pub const ENDPOINT_METHODS: &str = "GET, HEAD";

/// Each admin path is an endpoint, exactly as spelled, and so are the dashboard's files.
fn is_endpoint(path: &str) -> bool {
    ADMIN_PATHS.contains(&path)
        || path
            .strip_prefix(SERVES_FILES)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// What sluice answers instead of forwarding: `None` for a path that is not reserved, or for an
/// endpoint asked for exactly with a method it serves (its handler answers).
pub fn refusal(method: &Method, path: &str) -> Option<Error> {
    routing::first_segment_among(path, &ADMIN_PATHS)?;
    if is_endpoint(path) {
        if *method == Method::GET || *method == Method::HEAD {
            return None;
        }
        return Some(Error::MethodNotAllowed(ENDPOINT_METHODS));
    }
    Some(Error::ReservedPath(path.to_string()))
}

/// Answers requests for reserved paths that no endpoint serves, before routing.
pub async fn answer_reserved<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    match refusal(req.method(), req.path()) {
        Some(refusal) => Ok(req.error_response(refusal).map_into_right_body()),
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_paths_are_found_in_any_spelling() {
        for path in [
            "/stats",
            "/stats/",
            "/STATS",
            "/Stats/x/y",
            "//stats",
            "/./stats",
            "/%73tats",
            "/%2573tats",
            "\\stats",
            "/stats;x",
        ] {
            assert_eq!(
                routing::first_segment_among(path, &ADMIN_PATHS),
                Some("/stats"),
                "{path}"
            );
        }
        for path in [
            "/",
            "",
            "/statsx",
            "/v1/stats",
            "/anthropic/v1/messages",
            "/%zz",
        ] {
            assert_eq!(
                routing::first_segment_among(path, &ADMIN_PATHS),
                None,
                "{path}"
            );
        }
        assert_eq!(
            routing::first_segment_among("/dashboard/team", &ADMIN_PATHS),
            Some("/dashboard")
        );
    }

    #[test]
    fn only_exact_endpoints_with_get_or_head_pass() {
        assert!(refusal(&Method::GET, "/stats").is_none());
        assert!(refusal(&Method::HEAD, "/healthz").is_none());
        assert!(refusal(&Method::POST, "/v1/messages").is_none());
        assert!(matches!(
            refusal(&Method::POST, "/stats"),
            Some(Error::MethodNotAllowed(_))
        ));
        assert!(refusal(&Method::GET, "/dashboard/app.js").is_none());
        assert!(matches!(
            refusal(&Method::POST, "/dashboard/app.js"),
            Some(Error::MethodNotAllowed(_))
        ));
        for path in ["/stats/", "/STATS", "/Dashboard", "/metrics/x"] {
            assert!(
                matches!(refusal(&Method::GET, path), Some(Error::ReservedPath(_))),
                "{path}"
            );
        }
    }
}
