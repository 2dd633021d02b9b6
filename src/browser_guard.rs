//! The browser checks of [`crate::browsers`] as a middleware in front of every request: admin
//! paths answer only known hosts, proxied routes refuse other sites' pages.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web;

use crate::routing;
use crate::settings::ADMIN_PATHS;
use crate::state::AppState;

/// The host a request names: its `Host` header, else (HTTP/2) the URI's authority.
fn requested_host(req: &ServiceRequest) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Refuses what the module describes, before routing, in the route protocol's error shape.
pub async fn guard<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let checked = match req.app_data::<web::Data<AppState>>() {
        Some(state) => {
            let snapshot = state.snapshot();
            let policy = &snapshot.settings.browsers;
            let host = requested_host(&req);
            match routing::first_segment_among(req.path(), &ADMIN_PATHS) {
                Some("/healthz") => Ok(()),
                Some(_) => policy.check_admin(host),
                None => policy.check_proxied(host, req.headers()),
            }
        }
        None => Ok(()),
    };
    match checked {
        Err(refusal) => {
            tracing::warn!(path = %req.path(), kind = refusal.kind(), "{refusal}");
            Ok(req.error_response(refusal).map_into_right_body())
        }
        Ok(()) => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}
