//! Where a request enters: route → credentials → upstream request → answer streamed back through
//! the usage tap → one record to the aggregator.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use awc::error::{ConnectError, SendRequestError};
use futures_util::StreamExt;

use crate::credentials::Outbound;
use crate::error::Error;
use crate::headers;
use crate::metrics::tap::{Timing, Watch};
use crate::metrics::{Outcome, PendingRecord, RequestRecord, UsageTap};
use crate::routing;
use crate::settings::Protocol;
use crate::state::AppState;
use crate::upstream::{UpstreamOutcome, WorkerClients};
use crate::usage::{AnswerFormat, UsageParser};

const SESSION_HEADER: &str = "x-claude-code-session-id";

/// Forwards any request under a route's prefix.
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
) -> HttpResponse {
    let received = Instant::now();
    let mut pending = state.recorder.open(new_record(&req));
    match exchange(&req, payload, &state, &clients, &mut pending, received).await {
        Ok(response) => response,
        Err(err) => {
            let status = err.status_code().as_u16();
            tracing::warn!(
                request_id = %pending.get_mut().request_id,
                kind = err.kind(),
                status,
                "{err}"
            );
            pending.finish(status, Outcome::Refused(err.kind()), received);
            err.error_response()
        }
    }
}

async fn exchange(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    clients: &WorkerClients,
    pending: &mut PendingRecord,
    received: Instant,
) -> Result<HttpResponse, Error> {
    let record = pending.get_mut();
    let snapshot = state.snapshot();
    let path = req.uri().path();
    let (index, route) = snapshot
        .settings
        .route_for(path)
        .ok_or_else(|| Error::NoRoute(path.to_string()))?;
    record.route = route.prefix.clone();
    let rest = if route.prefix == "/" {
        path
    } else {
        &path[route.prefix.len()..]
    };
    if routing::escapes_prefix(rest) {
        return Err(Error::PathEscapes);
    }

    let limit = snapshot.settings.max_request_body_bytes;
    let body = RequestBody::of(req.headers());
    if let RequestBody::Sized(length) = body {
        if length > limit {
            return Err(Error::BodyTooLarge(limit));
        }
    }

    let Outbound {
        headers: outbound_headers,
        source,
        credential,
        caller,
    } = snapshot
        .credentials
        .outbound(index, req.method(), req.headers())?;
    record.source = Some(source);
    record.credential = credential;
    record.caller = caller;

    let plan = &snapshot.upstream;
    let url = routing::upstream_url(&plan.routes[index].base, rest, req.uri().query());
    let mut upstream_request = clients
        .client(plan, index)
        .request(req.method().clone(), url)
        // Bytes pass as they are: no `accept-encoding` of our own, no decompression.
        .no_decompress();
    *upstream_request.headers_mut() = outbound_headers;

    let reads_model =
        route.protocol == Protocol::Anthropic && answer_format(req.headers()) == AnswerFormat::Json;
    let request_side = Rc::new(RefCell::new(RequestSide {
        over_limit: false,
        model: reads_model.then(|| UsageParser::new(AnswerFormat::Json)),
    }));
    let limited = tap_request_body(payload, limit, request_side.clone());
    let overhead_before = received.elapsed();
    let sending = match body {
        RequestBody::Sized(length) => upstream_request.send_body(SizedStream::new(length, limited)),
        RequestBody::Chunked => upstream_request.send_body(BodyStream::new(limited)),
        // `send()` would declare `content-length: 0`; a request without a body has none.
        RequestBody::None => upstream_request.send_body(actix_web::body::None::new()),
    };
    let first_byte = plan.timeouts.first_byte;
    let sent = tokio::select! {
        sent = tokio::time::timeout(first_byte, sending) => sent,
        () = state.shutdown.cancelled() => return Err(Error::ShuttingDown),
    };
    let head_received = Instant::now();
    let ttfb = head_received - received;
    let result = match sent {
        Err(_) => Err(Error::UpstreamTimeout(first_byte.as_millis())),
        Ok(Err(err)) => Err(upstream_error(
            err,
            request_side.borrow().over_limit,
            limit,
            plan.timeouts.connect,
        )),
        Ok(Ok(response)) => Ok(response),
    };
    if let Err(err) = &result {
        // Failures only: successes are counted by the aggregator, and a message per request
        // would cost a cross-thread wakeup on the hot path.
        state.pool.do_send(UpstreamOutcome {
            route: route.prefix.clone(),
            failure: err.kind(),
        });
    }
    let upstream = result?;
    // The model the client asked for; the answer's own `model` replaces it when it has one.
    record.model = request_side
        .borrow_mut()
        .model
        .as_mut()
        .and_then(|p| p.finish().model);

    record.status = upstream.status().as_u16();
    record.ttfb = Some(ttfb);
    record.rate_limits = rate_limit_headers(upstream.headers());
    let format = answer_format(upstream.headers());
    record.streamed = format == AnswerFormat::EventStream;
    let parser = (route.protocol == Protocol::Anthropic).then(|| UsageParser::new(format));

    let mut response = HttpResponse::build(upstream.status());
    for (name, value) in headers::response_headers(upstream.headers()) {
        response.append_header((name.clone(), value.clone()));
    }
    let length = content_length(upstream.headers());
    let status = upstream.status();
    let tap = UsageTap::new(
        upstream,
        parser,
        pending.hand_over(),
        state.recorder.clone(),
        Timing {
            received,
            overhead_before,
            head_received,
        },
        Watch {
            idle: plan.timeouts.idle,
            declared_length: length,
            shutdown: state.shutdown.clone(),
        },
    );
    let no_body = req.method() == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || length == Some(0);
    if no_body {
        // actix never polls a body it will not send: the answer is complete as it stands
        // (without this, dropping the unpolled tap would count it as a client gone).
        tap.complete();
        return Ok(match length {
            Some(length) if status != StatusCode::NO_CONTENT => response.body(SizedStream::new(
                length,
                futures_util::stream::empty::<Result<web::Bytes, Error>>(),
            )),
            _ => response.finish(),
        });
    }
    Ok(match length {
        Some(length) => response.body(SizedStream::new(length, tap)),
        None => response.body(BodyStream::new(tap)),
    })
}

/// How the client framed its request body, which is how it goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestBody {
    Sized(u64),
    Chunked,
    None,
}

impl RequestBody {
    fn of(headers: &HeaderMap) -> Self {
        if let Some(length) = content_length(headers) {
            RequestBody::Sized(length)
        } else if headers.contains_key(header::TRANSFER_ENCODING) {
            RequestBody::Chunked
        } else {
            RequestBody::None
        }
    }
}

/// How a body is read for usage, from its `content-type`.
fn answer_format(headers: &HeaderMap) -> AnswerFormat {
    AnswerFormat::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// What the request body showed while it streamed through.
struct RequestSide {
    /// The body passed `max_request_body_bytes`.
    over_limit: bool,
    /// Reads the top-level `model` of a JSON body (bounded memory); fed only until it is found.
    model: Option<UsageParser>,
}

/// Streams the client's body through untouched, failing (and flagging) once it passes `limit`
/// bytes, and lets a copy of the first bytes show which model was asked for.
fn tap_request_body(
    payload: web::Payload,
    limit: u64,
    side: Rc<RefCell<RequestSide>>,
) -> impl futures_util::Stream<Item = Result<web::Bytes, Error>> + 'static {
    let mut seen: u64 = 0;
    let mut model_found = false;
    payload.map(move |chunk| {
        let chunk = chunk.map_err(|e| Error::ClientBody(e.to_string()))?;
        seen += chunk.len() as u64;
        let mut side = side.borrow_mut();
        if seen > limit {
            side.over_limit = true;
            return Err(Error::BodyTooLarge(limit));
        }
        if !model_found {
            if let Some(parser) = side.model.as_mut() {
                parser.feed(&chunk);
                model_found = parser.answer_model().is_some();
            }
        }
        Ok(chunk)
    })
}

fn upstream_error(err: SendRequestError, over_limit: bool, limit: u64, connect: Duration) -> Error {
    match err {
        _ if over_limit => Error::BodyTooLarge(limit),
        SendRequestError::Connect(ConnectError::Timeout) => {
            Error::ConnectTimeout(connect.as_millis())
        }
        SendRequestError::Connect(err) => Error::UpstreamUnreachable(err.to_string()),
        SendRequestError::Timeout => Error::UpstreamTimeout(0),
        // The body stream's own error (ours, from `tap_request_body`) comes back boxed.
        SendRequestError::Body(err) => match err.downcast::<Error>() {
            Ok(err) => *err,
            Err(err) => Error::ClientBody(err.to_string()),
        },
        other => Error::UpstreamBroken(other.to_string()),
    }
}

/// `anthropic-ratelimit-*` and `retry-after`, the subscription's rate-limit state.
fn rate_limit_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            name.as_str().starts_with("anthropic-ratelimit-") || *name == header::RETRY_AFTER
        })
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect()
}

fn new_record(req: &HttpRequest) -> RequestRecord {
    RequestRecord {
        request_id: req
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        finished_at: SystemTime::now(),
        route: String::new(),
        method: req.method().to_string(),
        path: req.path().to_string(),
        status: 0,
        model: None,
        source: None,
        credential: None,
        caller: None,
        session: req
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        usage: Default::default(),
        streamed: false,
        outcome: Outcome::Completed,
        ttfb: None,
        total: Duration::ZERO,
        overhead: None,
        rate_limits: Vec::new(),
    }
}
