//! The Responses API over a WebSocket (Codex CLI's first choice of transport). sluice takes the
//! client's upgrade on a route's `…/responses`, opens the same upgrade to the upstream with the
//! credentials the route's rules decide, and pipes messages both ways as they are, while each
//! response on the socket is metered as a request of its own: one record each, its tokens read
//! from its events by the same reader as an SSE answer (each event is fed to it as one SSE
//! event), its quotas judged before its `response.create` goes upstream.
//!
//! A socket holds a `max_concurrent` slot while it is open; a prewarm `response.create` with
//! `"generate": false` is forwarded but is not a turn. permessage-deflate is never negotiated:
//! neither side is offered it, so frames cross uncompressed (Codex works so).

mod turns;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_http::ws::{CloseCode, CloseReason, Item, ProtocolError};
use actix_web::http::header::{self, HeaderName};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, Session};
use awc::error::WsClientError;
use awc::ws::{Codec, Frame, Message as UpstreamMessage};
use awc::BoxedSocket;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};

use crate::credentials::CredentialSource;
use crate::error::Error;
use crate::metrics::{Outcome, PendingRecord, RequestRecord};
use crate::protocol::{Protocol, UsageParser};
use crate::proxy;
use crate::quotas::{Claim, QuotaGuard, QuotaHold, QuotaSet, RequestSubjects};
use crate::routing;
use crate::state::{AppState, Snapshot};
use crate::upstream::WorkerClients;
use crate::usage::AnswerFormat;

pub use turns::{classify_client, classify_server, refusal_event, ClientFrame, ServerEvent};

/// Responses a client may have asked for on one socket and not yet had answered; more are
/// refused (each holds a usage reader and a quota hold).
const MAX_TURNS_IN_FLIGHT: usize = 16;

type UpstreamSocket = actix_codec::Framed<BoxedSocket, Codec>;

/// A WebSocket upgrade of a Responses API path (`GET …/responses`, `upgrade: websocket`).
pub fn is_responses_upgrade(req: &HttpRequest) -> bool {
    req.method() == Method::GET
        && req.path().trim_end_matches('/').ends_with("/responses")
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"))
}

/// Takes the upgrade: the same phases as a request (route, access key, credentials, quotas —
/// here only `max_concurrent`), then the upstream's upgrade; the socket is then served on its
/// own task. A refusal or an upstream that does not upgrade ends in one record, as a request
/// would; an open socket records its responses instead.
pub async fn open(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
) -> HttpResponse {
    let received = Instant::now();
    let mut pending = state.recorder.open(proxy::new_record(&req));
    pending.get_mut().streamed = true;
    let (response, session, stream) = match actix_ws::handle(&req, payload) {
        Ok(handled) => handled,
        Err(err) => {
            let status = err.as_response_error().status_code();
            pending.finish(status.as_u16(), Outcome::Refused("bad_upgrade"), received);
            return err.error_response();
        }
    };
    let snapshot = state.snapshot();
    let opened = match handshake(&req, &state, &snapshot, &clients, pending.get_mut()).await {
        Ok(opened) => opened,
        Err(Refused::Sluice(err)) => {
            let protocol = snapshot
                .settings
                .route_for(req.path())
                .map_or(crate::protocol::Protocol::Anthropic, |(_, route)| {
                    route.protocol
                });
            return proxy::record_refusal(err, protocol, &mut pending, received);
        }
        Err(Refused::Upstream(status)) => {
            pending.finish(status.as_u16(), Outcome::Completed, received);
            return upstream_refused(status);
        }
    };
    let Some(template) = pending.discard() else {
        return HttpResponse::InternalServerError().finish();
    };
    let limit = limit_of(&snapshot);
    let socket = Socket {
        session,
        client: stream
            .max_frame_size(limit)
            .aggregate_continuations()
            .max_continuation_size(limit),
        upstream: opened.upstream,
        turns: VecDeque::new(),
        template,
        protocol: opened.protocol,
        snapshot: snapshot.clone(),
        state: state.clone(),
        rate_limits: opened.rate_limits,
        limit,
        idle: snapshot.upstream.timeouts.idle,
        next_turn: 0,
        continued: None,
        _slot: opened.slot,
    };
    actix_web::rt::spawn(socket.serve());
    response
}

/// Why an upgrade was not taken.
enum Refused {
    /// sluice refuses it (no route, access key, quota, upstream unreachable…).
    Sluice(Error),
    /// The upstream answered the upgrade with this status instead of switching protocols.
    Upstream(StatusCode),
}

impl From<Error> for Refused {
    fn from(err: Error) -> Self {
        Refused::Sluice(err)
    }
}

/// What the upstream's upgrade gave.
struct Opened {
    upstream: UpstreamSocket,
    protocol: Protocol,
    rate_limits: Vec<(String, String)>,
    slot: QuotaGuard,
}

/// Route, access key, credentials and the socket's `max_concurrent` slot, then the upstream's
/// upgrade (within `first_byte_ms`).
async fn handshake(
    req: &HttpRequest,
    state: &AppState,
    snapshot: &Snapshot,
    clients: &WorkerClients,
    record: &mut RequestRecord,
) -> Result<Opened, Refused> {
    let (index, route, rest) = proxy::route_of(&snapshot.settings, req.path(), record)?;
    record.project = proxy::attribution_of(req, &snapshot.settings.project_header);
    record.caller = snapshot.credentials.admit(req.headers())?;
    let outbound =
        snapshot
            .credentials
            .rewrite(index, req.method(), req.headers(), req.uri().query())?;
    record.source = Some(outbound.source);
    record.credential = outbound.credential;
    let slot = if state.quotas.is_empty() {
        QuotaGuard::none()
    } else {
        let admission = state
            .quotas
            .admit_claim(
                &subjects(record, None),
                jiff::Timestamp::now(),
                QuotaSet::WithoutModel,
                Claim::Socket,
            )
            .map_err(Error::from)?;
        proxy::log_would_refuse(&record.request_id, &admission.would_refuse);
        admission.guard
    };

    // A subscription login goes to the route's `subscription_upstream`, as over HTTPS.
    let plan = &snapshot.upstream;
    let lane = plan.lane(index, outbound.source == CredentialSource::ClientOauth);
    let query = routing::upstream_query(
        req.uri().query(),
        outbound.query_credential_removed.as_deref(),
    );
    let url = routing::upstream_url(&plan.routes[lane].base, rest, query.as_deref());
    let mut request = clients
        .client(plan, lane)
        .websocket(&url, limit_of(snapshot));
    for (name, value) in outbound.headers.iter() {
        if !is_handshake_header(name) {
            request = request.header(name.clone(), value.clone());
        }
    }
    let first_byte = plan.timeouts.first_byte;
    let connected = tokio::select! {
        connected = tokio::time::timeout(first_byte, request.connect()) => connected,
        () = state.shutdown.cancelled() => return Err(Error::ShuttingDown.into()),
    };
    let (response, upstream) = match connected {
        Err(_) => Err(Error::UpstreamTimeout(first_byte.as_millis())),
        Ok(Err(WsClientError::InvalidResponseStatus(status))) => {
            return Err(Refused::Upstream(status))
        }
        Ok(Err(WsClientError::SendRequest(err))) => {
            Err(Error::UpstreamUnreachable(err.to_string()))
        }
        Ok(Err(err)) => Err(Error::UpstreamBroken(err.to_string())),
        Ok(Ok(connected)) => Ok(connected),
    }
    .inspect_err(|err| record.upstream_failure = Some(err.kind()))?;
    record.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
    Ok(Opened {
        upstream,
        protocol: route.protocol,
        rate_limits: route.protocol.rate_limit_headers(response.headers()),
        slot,
    })
}

/// Headers of the client's own handshake, which the upstream handshake makes anew: its key and
/// version, and the extensions it offered (sluice negotiates none).
fn is_handshake_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("sec-websocket-") || *name == header::ORIGIN
}

/// Frames and messages larger than the request body limit are refused.
fn limit_of(snapshot: &Snapshot) -> usize {
    usize::try_from(snapshot.settings.max_request_body_bytes).unwrap_or(usize::MAX)
}

fn subjects<'r>(record: &'r RequestRecord, model: Option<&'r str>) -> RequestSubjects<'r> {
    RequestSubjects::of_record(record, model)
}

/// The upstream would not upgrade: the client gets its status (the body was not kept).
fn upstream_refused(status: StatusCode) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            crate::error::SLUICE_ERROR_HEADER,
            "upstream_refused_upgrade",
        ))
        .json(serde_json::json!({"error": {
            "message": format!("sluice: the upstream answered the WebSocket upgrade with {status}"),
            "type": "upstream_error",
            "param": null,
            "code": "upstream_refused_upgrade",
        }}))
}

/// One response the client asked for, until its last event.
struct Turn {
    /// `None` for a prewarm, which is not recorded.
    record: Option<PendingRecord>,
    reader: Option<UsageParser>,
    hold: Option<QuotaHold>,
    asked_at: Instant,
}

/// How a socket ended.
enum End {
    ClientClosed(Option<CloseReason>),
    /// The client's connection ended without a close frame (Codex leaves so), or broke.
    ClientGone,
    /// A message over the size limit.
    TooLarge,
    UpstreamClosed(Option<CloseReason>),
    UpstreamGone,
    Idle,
    Draining,
    Shutdown,
}

struct Socket {
    session: Session,
    client: AggregatedMessageStream,
    upstream: UpstreamSocket,
    /// Responses asked for and not yet ended, oldest first: the server answers them in order.
    turns: VecDeque<Turn>,
    /// The socket's record as the handshake made it; each turn's record starts from it.
    template: RequestRecord,
    protocol: Protocol,
    snapshot: Arc<Snapshot>,
    state: web::Data<AppState>,
    /// The latest plan windows: the upgrade's headers, then each `codex.rate_limits` event.
    rate_limits: Vec<(String, String)>,
    limit: usize,
    idle: Duration,
    next_turn: u64,
    /// A text message from upstream arriving in continuation frames, gathered (up to `limit`)
    /// to be read once whole; `None` between messages or past the limit.
    continued: Option<BytesMut>,
    /// The socket's `max_concurrent` slot, freed when the socket ends.
    _slot: QuotaGuard,
}

impl Socket {
    async fn serve(mut self) {
        let shutdown = self.state.shutdown.clone();
        let draining = self.state.draining.clone();
        let end = loop {
            let quiet = tokio::time::sleep(self.idle);
            let step = tokio::select! {
                message = self.client.next() => self.client_message(message).await,
                frame = self.upstream.next() => self.upstream_frame(frame).await,
                () = quiet => Err(End::Idle),
                () = shutdown.cancelled() => Err(End::Shutdown),
                () = draining.cancelled(), if self.turns.is_empty() => Err(End::Draining),
            };
            if let Err(end) = step {
                break end;
            }
        };
        self.close(end).await;
    }

    async fn client_message(
        &mut self,
        message: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Result<(), End> {
        let message = match message {
            None => return Err(End::ClientGone),
            Some(Err(ProtocolError::Overflow)) => return Err(End::TooLarge),
            Some(Err(_)) => return Err(End::ClientGone),
            Some(Ok(message)) => message,
        };
        let outgoing = match message {
            AggregatedMessage::Text(text) => {
                if !self.ask(&text).await? {
                    return Ok(());
                }
                UpstreamMessage::Text(text)
            }
            AggregatedMessage::Binary(bytes) => UpstreamMessage::Binary(bytes),
            AggregatedMessage::Ping(bytes) => UpstreamMessage::Ping(bytes),
            AggregatedMessage::Pong(bytes) => UpstreamMessage::Pong(bytes),
            AggregatedMessage::Close(reason) => return Err(End::ClientClosed(reason)),
        };
        self.upstream
            .send(outgoing)
            .await
            .map_err(|_| End::UpstreamGone)
    }

    /// Meters a client text message before it goes upstream: a `response.create` opens a turn
    /// (or a prewarm) once its quotas admit it. `false`: refused, answered here, not forwarded.
    async fn ask(&mut self, text: &str) -> Result<bool, End> {
        let ClientFrame::ResponseCreate { model, turn } = classify_client(text) else {
            return Ok(true);
        };
        let asked_at = Instant::now();
        if !turn {
            self.turns.push_back(Turn {
                record: None,
                reader: None,
                hold: None,
                asked_at,
            });
            return Ok(true);
        }
        let mut record = self.template.clone();
        record.request_id = format!("{}-{}", self.template.request_id, self.next_turn);
        self.next_turn += 1;
        record.model = model;
        record.rate_limits.clone_from(&self.rate_limits);
        let mut pending = self.state.recorder.open(record);
        if self.turns.len() >= MAX_TURNS_IN_FLIGHT {
            let err = Error::Internal(format!(
                "more than {MAX_TURNS_IN_FLIGHT} responses in flight on one socket"
            ));
            self.refuse(err, &mut pending, asked_at).await?;
            return Ok(false);
        }
        let hold = match self.admit(pending.get_mut()) {
            Ok(hold) => hold,
            Err(err) => {
                self.refuse(err, &mut pending, asked_at).await?;
                return Ok(false);
            }
        };
        self.turns.push_back(Turn {
            record: Some(pending),
            reader: self.protocol.answer_reader(AnswerFormat::EventStream),
            hold,
            asked_at,
        });
        Ok(true)
    }

    /// A turn's quotas, its model known from its `response.create`.
    fn admit(&self, record: &RequestRecord) -> Result<Option<QuotaHold>, Error> {
        let ledger = &self.state.quotas;
        if ledger.is_empty() {
            return Ok(None);
        }
        let admission = ledger.admit_claim(
            &subjects(record, record.model.as_deref()),
            jiff::Timestamp::now(),
            QuotaSet::All,
            Claim::Turn,
        )?;
        proxy::log_would_refuse(&record.request_id, &admission.would_refuse);
        Ok(Some(QuotaHold::new(
            admission.guard,
            self.snapshot.prices.clone(),
        )))
    }

    /// Answers a refused `response.create` with the Responses API's error event, and records it.
    async fn refuse(
        &mut self,
        err: Error,
        pending: &mut PendingRecord,
        asked_at: Instant,
    ) -> Result<(), End> {
        let mut headers = vec![(crate::error::SLUICE_ERROR_HEADER, err.kind().to_string())];
        if let Error::QuotaExceeded {
            quota,
            retry_after_s,
            ..
        } = &err
        {
            headers.push((crate::error::SLUICE_QUOTA_HEADER, quota.clone()));
            headers.push(("retry-after", retry_after_s.to_string()));
        }
        let event = refusal_event(err.kind(), &err.to_string(), &headers);
        tracing::warn!(
            request_id = %pending.get_mut().request_id,
            kind = err.kind(),
            "{err}"
        );
        pending.finish(
            err.status_code().as_u16(),
            Outcome::Refused(err.kind()),
            asked_at,
        );
        self.session.text(event).await.map_err(|_| End::ClientGone)
    }

    async fn upstream_frame(
        &mut self,
        frame: Option<Result<Frame, ProtocolError>>,
    ) -> Result<(), End> {
        let frame = match frame {
            None | Some(Err(_)) => return Err(End::UpstreamGone),
            Some(Ok(frame)) => frame,
        };
        let sent = match frame {
            Frame::Text(bytes) => {
                self.read_event(&bytes);
                let Ok(text) = ByteString::try_from(bytes) else {
                    return Err(End::UpstreamGone);
                };
                self.session.text(text).await
            }
            Frame::Binary(bytes) => self.session.binary(bytes).await,
            Frame::Continuation(item) => {
                self.gather(&item);
                self.session.continuation(item).await
            }
            Frame::Ping(bytes) => self.session.ping(&bytes).await,
            Frame::Pong(bytes) => self.session.pong(&bytes).await,
            Frame::Close(reason) => return Err(End::UpstreamClosed(reason)),
        };
        sent.map_err(|_| End::ClientGone)
    }

    /// Gathers a text message that comes in continuation frames, to read it once whole.
    fn gather(&mut self, item: &Item) {
        match item {
            Item::FirstText(bytes) => {
                self.continued = (bytes.len() <= self.limit).then(|| BytesMut::from(&bytes[..]))
            }
            Item::FirstBinary(_) => self.continued = None,
            Item::Continue(bytes) | Item::Last(bytes) => {
                if let Some(gathered) = self.continued.as_mut() {
                    if gathered.len() + bytes.len() <= self.limit {
                        gathered.extend_from_slice(bytes);
                    } else {
                        self.continued = None;
                    }
                }
                if matches!(item, Item::Last(_)) {
                    if let Some(whole) = self.continued.take() {
                        self.read_event(&whole.freeze());
                    }
                }
            }
        }
    }

    /// One event from upstream: fed to the oldest open turn's reader (as one SSE event, so the
    /// reader is the one every SSE answer goes through); the turn ends on its last event.
    fn read_event(&mut self, event: &Bytes) {
        let kind = classify_server(event);
        if kind == ServerEvent::RateLimits {
            let windows = turns::rate_limit_headers(event);
            if !windows.is_empty() {
                self.rate_limits
                    .retain(|(name, _)| !name.starts_with("x-codex-"));
                self.rate_limits.extend(windows);
            }
            return;
        }
        let Some(turn) = self.turns.front_mut() else {
            return;
        };
        if let Some(record) = turn.record.as_mut() {
            let record = record.get_mut();
            if record.ttfb.is_none() {
                record.ttfb = Some(turn.asked_at.elapsed());
            }
        }
        if let Some(reader) = turn.reader.as_mut() {
            reader.feed(b"data: ");
            reader.feed(event);
            reader.feed(b"\n\n");
        }
        let outcome = match kind {
            ServerEvent::Ends => Outcome::Completed,
            ServerEvent::Fails => Outcome::UpstreamErrorEvent,
            ServerEvent::Continues | ServerEvent::RateLimits => return,
        };
        if let Some(turn) = self.turns.pop_front() {
            self.finish(turn, outcome);
        }
    }

    /// Ends a turn's record: its usage from its reader, its spend settled on its quotas before
    /// the last event reaches the client.
    fn finish(&self, mut turn: Turn, outcome: Outcome) {
        let Some(mut pending) = turn.record.take() else {
            return;
        };
        let record = pending.get_mut();
        if let Some(reader) = turn.reader.as_mut() {
            let answer = reader.finish();
            record.usage = answer.usage;
            record.priced_usd = answer.priced_usd;
            if answer.model.is_some() {
                record.model = answer.model;
            }
        }
        record.rate_limits.clone_from(&self.rate_limits);
        if let Some(hold) = turn.hold.take() {
            hold.settle(
                record.model.as_deref(),
                &record.usage,
                record.priced_usd,
                SystemTime::now(),
            );
        }
        let status = StatusCode::OK.as_u16();
        pending.finish(status, outcome, turn.asked_at);
    }

    /// Closes both sides and ends the turns still open with why the socket ended.
    async fn close(mut self, end: End) {
        let (to_client, to_upstream, outcome) = match end {
            End::ClientClosed(reason) => (None, reason, Outcome::ClientGone),
            End::ClientGone => (None, None, Outcome::ClientGone),
            End::TooLarge => {
                self.record_refused_message(Error::BodyTooLarge(self.limit as u64));
                let reason = CloseReason {
                    code: CloseCode::Size,
                    description: Some(format!("sluice: message larger than {} bytes", self.limit)),
                };
                (Some(reason), going_away(), Outcome::ClientGone)
            }
            End::UpstreamClosed(reason) => (reason, None, Outcome::UpstreamCut),
            End::UpstreamGone => (
                Some(CloseReason {
                    code: CloseCode::Error,
                    description: Some("sluice: the upstream connection ended".into()),
                }),
                None,
                Outcome::UpstreamCut,
            ),
            End::Idle => (going_away(), going_away(), Outcome::IdleTimeout),
            End::Draining => (going_away(), going_away(), Outcome::Shutdown),
            End::Shutdown => (going_away(), going_away(), Outcome::Shutdown),
        };
        while let Some(turn) = self.turns.pop_front() {
            self.finish(turn, outcome);
        }
        let _ = self
            .upstream
            .send(UpstreamMessage::Close(to_upstream))
            .await;
        let _ = self.upstream.close().await;
        let _ = self.session.close(to_client).await;
    }

    /// A message the client sent that sluice would not forward (too large): recorded as a
    /// refused request of its own.
    fn record_refused_message(&self, err: Error) {
        let mut record = self.template.clone();
        record.request_id = format!("{}-{}", self.template.request_id, self.next_turn);
        let mut pending = self.state.recorder.open(record);
        tracing::warn!(request_id = %pending.get_mut().request_id, kind = err.kind(), "{err}");
        pending.finish(
            err.status_code().as_u16(),
            Outcome::Refused(err.kind()),
            Instant::now(),
        );
    }
}

fn going_away() -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::Away,
        description: None,
    })
}
