//! Where a request enters. The request path as named phases, each a short method of
//! `Exchange` that decides one thing: `route` → `admit` → `credentials` → `quota` →
//! `upstream_request` → `send_upstream` → `respond` (the answer streamed back through the usage
//! tap, which records it); a phase that refuses ends in `record_refusal`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;

use crate::attribution;
use crate::client_stall::StallWatch;
use crate::connection::ClientSocket;
use crate::credentials::CredentialSource;
use crate::error::Error;
use crate::headers;
use crate::metrics::tap::{Timing, Watch};
use crate::metrics::{Outcome, PendingRecord, RequestRecord, UsageTap};
use crate::pricing::PriceTable;
use crate::protocol::{Protocol, RequestModel};
use crate::quotas::{Ledger, QuotaHold, QuotaSet, Refusal, RequestSubjects};
use crate::readers::text::TextMeter;
use crate::routing;
use crate::settings::{Route, Settings};
use crate::state::{AppState, Snapshot};
use crate::upload::{self, Upload};
use crate::upstream::{Answer, RequestBody, UpstreamRequest, WorkerClients};
use crate::usage::AnswerFormat;

const SESSION_HEADER: HeaderName = HeaderName::from_static("x-claude-code-session-id");
/// Codex CLI's session id (it also sends the same value as `thread-id`).
const CODEX_SESSION_HEADER: HeaderName = HeaderName::from_static("session-id");
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// Forwards any request under a route's prefix, phase by phase. Whatever happens, the request
/// yields exactly one record: the tap sends it when the answer ends, and a refusal here.
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
) -> HttpResponse {
    let received = Instant::now();
    let mut pending = state.recorder.open(new_record(&req));
    let body = RequestBody::of(req.headers());
    let idle = state.snapshot().upstream.timeouts.idle;
    let (upload, upload_watch) = upload::watch(payload, body != RequestBody::None, idle);
    // The route's protocol, once the route is known: sluice's own errors take its shape.
    let mut protocol = Protocol::Anthropic;
    let exchanged = upload_watch
        .guard(exchange(
            &req,
            (upload, body),
            &state,
            &clients,
            (&mut pending, &mut protocol),
            received,
        ))
        .await;
    match exchanged {
        Ok(response) => response,
        Err(err) => record_refusal(err, protocol, &mut pending, received),
    }
}

/// The phases in order. Each returns what the next needs or the error the client is told.
async fn exchange(
    req: &HttpRequest,
    (payload, body): (Upload, RequestBody),
    state: &AppState,
    clients: &WorkerClients,
    (pending, protocol): (&mut PendingRecord, &mut Protocol),
    received: Instant,
) -> Result<HttpResponse, Error> {
    let snapshot = state.snapshot();
    let exchange = Exchange {
        req,
        state,
        snapshot: &snapshot,
        received,
    };
    let target = exchange.route(pending.get_mut())?;
    *protocol = target.route.protocol;
    exchange.admit(body, pending.get_mut())?;
    let (headers, removed) = exchange.credentials(&target, pending.get_mut())?;
    let quota = exchange.quota(pending.get_mut())?;
    let subscription_login = pending.get_mut().source == Some(CredentialSource::ClientOauth);
    let upstream_request = exchange.upstream_request(
        &target,
        clients,
        (headers, removed.as_deref()),
        subscription_login,
    );
    let sent = exchange
        .send_upstream(
            &target,
            upstream_request,
            payload,
            body,
            quota,
            pending.get_mut(),
        )
        .await?;
    Ok(exchange.respond(&target, sent, pending))
}

/// One request on its way through: what every phase reads.
struct Exchange<'a> {
    req: &'a HttpRequest,
    state: &'a AppState,
    /// The settings generation this request started on; it finishes on it.
    snapshot: &'a Snapshot,
    received: Instant,
}

/// Where a request goes: its route (by index into the snapshot's lists) and the rest of the
/// path below the route's prefix.
struct Target<'s> {
    index: usize,
    route: &'s Route,
    rest: &'s str,
}

/// What came back from upstream, and what the request side saw on its way out.
struct Sent {
    response: Answer,
    /// The model the client asked for (the answer's own `model` replaces it when it has one).
    requested_model: Option<String>,
    /// The session the request body names (Gemini CLI's Code Assist calls), when no header did.
    requested_session: Option<String>,
    overhead_before: Duration,
    head_received: Instant,
    /// The request's hold on its quotas, kept until the answer ends.
    quota: Option<QuotaHold>,
}

impl<'a> Exchange<'a> {
    /// Which route the path belongs to, and the rest of the path below its prefix. A path that
    /// would leave the prefix is refused here.
    fn route(&self, record: &mut RequestRecord) -> Result<Target<'a>, Error> {
        let (index, route, rest) = route_of(&self.snapshot.settings, self.req.path(), record)?;
        Ok(Target { index, route, rest })
    }

    /// Whether the request may go on at all: a valid access key when keys are set, and a body
    /// within the size limit (when it declares its length; a chunked one is cut as it streams).
    /// Also who it counts for: the caller (access key name) and the project it names.
    fn admit(&self, body: RequestBody, record: &mut RequestRecord) -> Result<(), Error> {
        let limit = self.snapshot.settings.max_request_body_bytes;
        if matches!(body, RequestBody::Sized(length) if length > limit) {
            return Err(Error::BodyTooLarge(limit));
        }
        record.project = attribution_of(self.req, &self.snapshot.settings.project_header);
        record.caller = self.snapshot.credentials.admit(self.req.headers())?;
        Ok(())
    }

    /// The headers that go upstream: the client's own credentials first, the server key only
    /// as the route's policy allows, never an access key or the admin token. Beside them, a
    /// client credential in the query string that must not go upstream.
    fn credentials(
        &self,
        target: &Target,
        record: &mut RequestRecord,
    ) -> Result<(HeaderMap, Option<String>), Error> {
        let outbound = self.snapshot.credentials.rewrite(
            target.index,
            self.req.method(),
            self.req.headers(),
            self.req.uri().query(),
        )?;
        record.source = Some(outbound.source);
        record.credential = outbound.credential;
        Ok((outbound.headers, outbound.query_credential_removed))
    }

    /// Whether the request fits its quotas, judged once it is known who sends it (caller and
    /// credential source) and before anything goes upstream. Quotas that select by model are
    /// judged as the body shows the model (see `tap_request_body`). The hold counts the request
    /// as in flight until its answer ends.
    fn quota(&self, record: &RequestRecord) -> Result<Option<QuotaHold>, Error> {
        let ledger = &self.state.quotas;
        if ledger.is_empty() {
            return Ok(None);
        }
        let subjects = RequestSubjects::of_record(record, None);
        let admission =
            ledger.admit_set(&subjects, jiff::Timestamp::now(), QuotaSet::WithoutModel)?;
        log_would_refuse(&record.request_id, &admission.would_refuse);
        Ok(Some(QuotaHold::new(
            admission.guard,
            self.snapshot.prices.clone(),
        )))
    }

    /// The upstream request: same method, path below the prefix and query, on this worker's
    /// client for the route — for a subscription login, the route's `subscription_upstream`
    /// when it has one.
    fn upstream_request(
        &self,
        target: &Target,
        clients: &WorkerClients,
        (headers, removed): (HeaderMap, Option<&str>),
        subscription_login: bool,
    ) -> UpstreamRequest {
        let plan = &self.snapshot.upstream;
        let lane = plan.lane(target.index, subscription_login);
        let base = &plan.routes[lane].base;
        UpstreamRequest {
            client: clients.client(plan, lane),
            method: self.req.method().clone(),
            url: routing::upstream_url(
                base,
                target.rest,
                routing::upstream_query(self.req.uri().query(), removed).as_deref(),
            ),
            headers,
        }
    }

    /// Streams the request body upstream untouched and waits (up to `first_byte_ms`) for the
    /// answer's head. An upstream failure is noted on the record (the UpstreamPool keeps each
    /// route's health from the records).
    async fn send_upstream(
        &self,
        target: &Target<'_>,
        request: UpstreamRequest,
        payload: Upload,
        body: RequestBody,
        quota: Option<QuotaHold>,
        record: &mut RequestRecord,
    ) -> Result<Sent, Error> {
        let limit = self.snapshot.settings.max_request_body_bytes;
        let by_model = (quota.is_some() && self.state.quotas.needs_model()).then(|| ModelQuotas {
            ledger: self.state.quotas.clone(),
            request_id: record.request_id.clone(),
            caller: record.caller.clone(),
            route: record.route.clone(),
            source: record.source.map(|source| source.as_str()),
            project: record.project.clone(),
            provider: record.provider,
            client: record.client,
        });
        let path_model = target.route.protocol.api().model_in_path(target.rest);
        let mut side = RequestSide {
            over_limit: false,
            model: target.route.protocol.request_reader(self.req.headers()),
            quota,
            by_model,
        };
        // A model named by the path (Gemini's) is known before any body byte is read.
        if let Some(model) = &path_model {
            side.judge_model(model)?;
        }
        let request_side = Rc::new(RefCell::new(side));
        let upload = payload.progress();
        let limited = tap_request_body(payload, limit, request_side.clone());
        let overhead_before = self.received.elapsed();
        // Boxed: the upstream exchange's state is most of this request's future, which is
        // otherwise moved (copied) whole as it is handed from future to future.
        let sending = Box::pin(request.send(body, limited));
        let timeouts = self.snapshot.upstream.timeouts;
        let sent = tokio::select! {
            sent = tokio::time::timeout(timeouts.first_byte, sending) => sent,
            () = self.state.shutdown.cancelled() => return Err(Error::ShuttingDown),
        };
        let head_received = Instant::now();
        let over_limit = request_side.borrow().over_limit;
        let response = match sent {
            // The upstream cannot answer a request it has not had all of: the client's fault.
            Err(_) if upload.waiting_on_client() => {
                Err(Error::ClientTimeout(timeouts.first_byte.as_millis()))
            }
            Err(_) => Err(Error::UpstreamTimeout(timeouts.first_byte.as_millis())),
            Ok(Err(_)) if over_limit => Err(Error::BodyTooLarge(limit)),
            Ok(result) => result,
        };
        if let Err(err) = &response {
            // The UpstreamPool learns of it from the record, with every other exchange.
            record.upstream_failure = err.is_upstream_failure().then(|| err.kind());
        }
        let mut side = request_side.borrow_mut();
        let requested_session = side
            .model
            .as_ref()
            .and_then(|reader| reader.session().map(str::to_string));
        let requested_model = side
            .model
            .as_mut()
            .and_then(RequestModel::finish)
            .or(path_model);
        Ok(Sent {
            response: response?,
            requested_model,
            requested_session,
            overhead_before,
            head_received,
            quota: side.quota.take(),
        })
    }

    /// Streams the answer back as it arrives, through the usage tap, which sends the record
    /// when the answer ends (or is dropped).
    fn respond(&self, target: &Target, sent: Sent, pending: &mut PendingRecord) -> HttpResponse {
        let upstream = sent.response;
        let record = pending.get_mut();
        if record.session.is_none() {
            record.session = sent.requested_session;
        }
        record.request_model = sent.requested_model.clone();
        record.model = sent.requested_model;
        record.status = upstream.status().as_u16();
        record.ttfb = Some(sent.head_received - self.received);
        record.rate_limits = target.route.protocol.rate_limit_headers(upstream.headers());
        let format = answer_format(upstream.headers());
        record.streamed = format == AnswerFormat::EventStream;
        let status = upstream.status();

        let mut response = HttpResponse::build(upstream.status());
        for (name, value) in headers::response_headers(upstream.headers()) {
            response.append_header((name.clone(), value.clone()));
        }
        let length = headers::content_length(upstream.headers());
        let reader = target.route.protocol.answer_reader_for(
            self.req.method(),
            self.req.path(),
            status,
            format,
            || PriceTable::clone(&self.snapshot.prices),
        );
        let meter = reader
            .as_ref()
            .filter(|reader| reader.reads_answers())
            .map(|_| TextMeter::new(target.route.protocol.text_keys()));
        let mut tap = UsageTap::new(
            upstream.into_body(),
            reader,
            meter,
            pending.hand_over(),
            self.state.recorder.clone(),
            Timing {
                received: self.received,
                overhead_before: sent.overhead_before,
                head_received: sent.head_received,
            },
            Watch {
                idle: self.snapshot.upstream.timeouts.idle,
                declared_length: length,
                shutdown: self.state.shutdown.clone(),
                stall: StallWatch::new(
                    ClientSocket::of(self.req),
                    self.snapshot.upstream.timeouts.idle,
                ),
            },
        );
        tap.hold_quota(sent.quota);
        let no_body = self.req.method() == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || length == Some(0);
        with_body(response, tap, length, no_body, status)
    }
}

/// The answer's body: the tap itself, sized when the upstream declared a length. An answer that
/// has no body is complete as it stands.
fn with_body(
    mut response: actix_web::HttpResponseBuilder,
    tap: UsageTap,
    length: Option<u64>,
    no_body: bool,
    status: StatusCode,
) -> HttpResponse {
    if no_body {
        // actix never polls a body it will not send: the answer is complete as it stands
        // (without this, dropping the unpolled tap would count it as a client gone).
        tap.complete();
        return match length {
            Some(length) if status != StatusCode::NO_CONTENT => response.body(SizedStream::new(
                length,
                futures_util::stream::empty::<Result<web::Bytes, Error>>(),
            )),
            _ => response.finish(),
        };
    }
    match length {
        Some(length) => response.body(SizedStream::new(length, tap)),
        None => response.body(BodyStream::new(tap)),
    }
}

/// The route `path` belongs to (its index in the settings), and the rest of the path below its
/// prefix; the record learns its route and provider. A path that would leave the prefix is
/// refused. (A request and a WebSocket upgrade are routed alike.)
pub(crate) fn route_of<'s, 'p>(
    settings: &'s Settings,
    path: &'p str,
    record: &mut RequestRecord,
) -> Result<(usize, &'s Route, &'p str), Error> {
    let (index, route) = settings
        .route_for(path)
        .ok_or_else(|| Error::NoRoute(path.to_string()))?;
    record.route = route.prefix.clone();
    record.provider = Some(route.protocol.as_str());
    let rest = routing::rest_below(&route.prefix, path)?;
    Ok((index, route, rest))
}

/// A request sluice answers itself with an error: logged, recorded with its kind, answered
/// in the error shape of the route's `protocol` (Anthropic's before a route is known).
pub(crate) fn record_refusal(
    err: Error,
    protocol: Protocol,
    pending: &mut PendingRecord,
    received: Instant,
) -> HttpResponse {
    let status = err.status_code().as_u16();
    tracing::warn!(
        request_id = %pending.get_mut().request_id,
        kind = err.kind(),
        status,
        "{err}"
    );
    let client = pending.get_mut().client;
    pending.finish(status, Outcome::Refused(err.kind()), received);
    match err {
        Error::ClientBody(_) => upload::broken_upload_answer(&err, protocol),
        _ => err.response_for(protocol, client),
    }
}

/// How a body is read for usage, from its `content-type`.
pub fn answer_format(headers: &HeaderMap) -> AnswerFormat {
    AnswerFormat::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// What the request body showed while it streamed through.
struct RequestSide {
    /// The body passed `max_request_body_bytes`.
    over_limit: bool,
    /// Reads the top-level `model` of the body (bounded memory); fed only until it is found,
    /// and the session the body names, when its API names one there.
    model: Option<RequestModel>,
    /// The request's hold on its quotas; joined by the quotas on its model once that is read.
    quota: Option<QuotaHold>,
    /// Quotas that select by model, still to be judged.
    by_model: Option<ModelQuotas>,
}

/// Who sent a request, for judging the quotas on its model once the body shows it.
struct ModelQuotas {
    ledger: std::sync::Arc<Ledger>,
    request_id: String,
    caller: Option<String>,
    route: String,
    source: Option<&'static str>,
    project: Option<String>,
    provider: Option<&'static str>,
    client: Option<&'static str>,
}

impl RequestSide {
    /// Judges the quotas on `model`. A refusal un-counts the request everywhere and fails the
    /// body, so the upstream never receives a whole request; the client is told why.
    fn judge_model(&mut self, model: &str) -> Result<(), Error> {
        let Some(by_model) = self.by_model.take() else {
            return Ok(());
        };
        let subjects = RequestSubjects {
            caller: by_model.caller.as_deref(),
            route: Some(by_model.route.as_str()),
            model: Some(model),
            source: by_model.source,
            project: by_model.project.as_deref(),
            provider: by_model.provider,
            client: by_model.client,
        };
        match by_model
            .ledger
            .admit_set(&subjects, jiff::Timestamp::now(), QuotaSet::ByModel)
        {
            Ok(admission) => {
                log_would_refuse(&by_model.request_id, &admission.would_refuse);
                if let Some(hold) = self.quota.as_mut() {
                    hold.join(admission.guard);
                }
                Ok(())
            }
            Err(refusal) => {
                if let Some(hold) = self.quota.take() {
                    hold.withdraw();
                }
                Err(refusal.into())
            }
        }
    }
}

/// Shadow quotas log what they would have refused.
pub(crate) fn log_would_refuse(request_id: &str, refusals: &[Refusal]) {
    for would in refusals {
        tracing::warn!(
            request_id = %request_id,
            quota = %would.quota,
            mode = would.mode.as_str(),
            "shadow: {}",
            would.message
        );
    }
}

/// Streams the client's body through untouched, failing (and flagging) once it passes `limit`
/// bytes, and lets a copy of the first bytes show which model was asked for.
fn tap_request_body(
    payload: Upload,
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
        let wanted = side
            .model
            .as_ref()
            .is_some_and(|reader| !model_found || reader.wants_session());
        if wanted {
            // A copy of the model only when quotas on it are still to be judged.
            let to_judge = side.by_model.is_some();
            if let Some(reader) = side.model.as_mut() {
                reader.feed(&chunk);
                if !model_found {
                    if let Some(model) = reader.model() {
                        model_found = true;
                        if let Some(model) = to_judge.then(|| model.to_string()) {
                            side.judge_model(&model)?;
                        }
                    }
                }
            }
        }
        Ok(chunk)
    })
}

pub(crate) fn attribution_of(
    req: &HttpRequest,
    header: impl header::AsHeaderName,
) -> Option<String> {
    req.headers()
        .get(header)
        .and_then(|value| attribution::attribution_key(value.as_bytes()))
}

fn client_of(req: &HttpRequest) -> Option<&'static str> {
    let header = |name: &HeaderName| req.headers().get(name).map(|value| value.as_bytes());
    attribution::client::client_of(
        header(&header::USER_AGENT),
        header(&attribution::client::ORIGINATOR_HEADER),
        header(&attribution::client::GOOG_API_CLIENT_HEADER),
    )
}

pub(crate) fn new_record(req: &HttpRequest) -> RequestRecord {
    RequestRecord {
        request_id: req
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| {
                // As its Display writes it, without the formatting machinery.
                let mut text = uuid::Uuid::encode_buffer();
                id.hyphenated().encode_lower(&mut text).to_owned()
            })
            .unwrap_or_default(),
        method: req.method().to_string(),
        path: req.path().to_string(),
        session: [SESSION_HEADER, CODEX_SESSION_HEADER]
            .iter()
            .find_map(|name| req.headers().get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        agent: attribution_of(req, &attribution::AGENT_HEADER),
        client: client_of(req),
        parent_agent: attribution_of(req, &attribution::PARENT_AGENT_HEADER),
        trace_parent: req
            .headers()
            .get(TRACEPARENT_HEADER)
            .and_then(|v| crate::otlp::TraceParent::parse(v.as_bytes())),
        ..RequestRecord::default()
    }
}
