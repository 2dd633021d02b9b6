//! HTTP/2 to an `https://` upstream. A worker learns once per plan, from one TLS handshake
//! offering h2 and http/1.1, which the upstream picks. When it picks h2, the worker's requests
//! go as streams on its HTTP/2 connections (see `h2_connections`: another connection opens
//! when every one is at the upstream's stream limit); when it picks http/1.1 they go through
//! awc as before. A stream the upstream never processed (refused with `REFUSED_STREAM`, or
//! above a GOAWAY's last stream id) is sent once more on another connection, its body replayed
//! from a bounded copy.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};
use futures_util::Stream;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::sync::mpsc;

use super::framing::RequestBody;
use super::h2_body::{BodyCut, OutgoingBody};
use super::h2_connections::{Connections, NoRoom};
use crate::error::Error;

pub use super::h2_connections::Stream as H2Stream;

/// A connection to the upstream, TLS on TCP.
type UpstreamIo = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Feeds the client's body to hyper; polled on the request's own task (see `OutgoingBody`).
pub type Pump = LocalBoxFuture<'static, ()>;

const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// How much of a request body is kept to send again should the upstream refuse its stream
/// unprocessed. A body that passed this before the refusal is not replayed: the client is
/// told `upstream_broken`, as without the retry.
pub const REPLAY_BYTES: usize = 1 << 20;
/// How long a new connection waits for the upstream's SETTINGS (its stream limit) before
/// requests share it on the RFC's recommended limit.
const SETTLE: Duration = Duration::from_millis(250);

/// One worker's HTTP/2 client for one route, and what it has learnt of the upstream.
pub struct H2Route {
    connections: Rc<Connections>,
    handshake: hyper::client::conn::http2::Builder<TokioExecutor>,
    connector: UpstreamConnector,
    /// Where the first handshake goes: the route's base URL.
    origin: http::Uri,
    offer: RefCell<Offer>,
}

/// Whether the upstream picks h2 when offered both.
enum Offer {
    Unknown,
    /// A handshake is under way; every request that needs the answer waits on the same one.
    Asking(Shared<LocalBoxFuture<'static, Result<bool, ConnectFailure>>>),
    Known {
        h2: bool,
    },
}

impl H2Route {
    /// `None` unless the route is `https://` and offers HTTP/2.
    pub fn build(
        base: &str,
        http2: bool,
        tls: &ClientConfig,
        connect: Duration,
        pool: crate::settings::Pool,
    ) -> Option<Rc<Self>> {
        let origin: http::Uri = base.parse().ok()?;
        if !http2 || origin.scheme_str() != Some("https") {
            return None;
        }
        let mut tls = tls.clone();
        // Set again below, to h2 and http/1.1.
        tls.alpn_protocols.clear();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(tcp);
        let connector = UpstreamConnector {
            https,
            timeout: connect,
        };
        let mut handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        handshake
            // An answer its client does not read holds at most a stream window upstream; the
            // connection's window, shared by all of its streams, is larger so that a few such
            // clients cannot stall the rest, and bounds what one connection buffers.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            // A connection that died silently fails its streams within this, not at their
            // first-byte timeout.
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            // No limit of hyper's own (it assumes 100) before the upstream's SETTINGS: the
            // limit is unknown until they come, which `open` waits for.
            .initial_max_send_streams(usize::MAX)
            .timer(TokioTimer::new());
        Some(Rc::new(Self {
            connections: Connections::new(pool.max_connections, pool.idle_keepalive),
            handshake,
            connector,
            origin,
            offer: RefCell::new(Offer::Unknown),
        }))
    }

    /// Whether the upstream picks h2, asking it with one handshake the first time. A failed
    /// handshake is this request's failure and leaves the question open for the next one.
    pub async fn speaks_h2(&self) -> Result<bool, Error> {
        let asking = match &mut *self.offer.borrow_mut() {
            Offer::Known { h2 } => return Ok(*h2),
            Offer::Asking(asking) => asking.clone(),
            offer @ Offer::Unknown => {
                let (connector, origin) = (self.connector.clone(), self.origin.clone());
                // On a task of its own: it finishes even if every request waiting for it
                // is dropped meanwhile (the next one then reads the answer).
                let handshake = actix_rt::spawn(async move {
                    let io = connector.connect(origin).await?;
                    Ok(io.connected().is_negotiated_h2())
                });
                let asking = async move {
                    handshake.await.unwrap_or_else(|_| {
                        Err(ConnectFailure::Failed("the handshake was cancelled".into()))
                    })
                }
                .boxed_local()
                .shared();
                *offer = Offer::Asking(asking.clone());
                asking
            }
        };
        let answer = asking.await;
        let mut offer = self.offer.borrow_mut();
        if matches!(*offer, Offer::Asking(_)) {
            *offer = match answer {
                Ok(h2) => Offer::Known { h2 },
                Err(_) => Offer::Unknown,
            };
        }
        answer.map_err(|failure| failure.into_error(self.connector.timeout))
    }

    /// Sends the request as a stream on one of the worker's h2 connections (opened when none
    /// has room), once more on another connection if the upstream refused it unprocessed.
    pub async fn send<S>(
        &self,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        framing: RequestBody,
        body: S,
    ) -> Result<H2Answer, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + 'static,
    {
        let method = http::Method::from_bytes(method.as_str().as_bytes())
            .map_err(|err| Error::Internal(err.to_string()))?;
        let uri: http::Uri = url
            .parse()
            .map_err(|err: http::uri::InvalidUri| Error::Internal(err.to_string()))?;
        let mut outgoing = http::HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_str().as_bytes()),
                http::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                outgoing.append(name, value);
            }
        }
        let upload = Upload::new(framing, body);
        let mut refused_on = None;
        loop {
            let stream = self.stream(refused_on.as_ref()).await?;
            let (body, mut pump) = Upload::attempt(&upload);
            let mut request = http::Request::new(body);
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = outgoing.clone();
            let mut responding = std::pin::pin!(stream.connection.sender().send_request(request));
            let responded = std::future::poll_fn(|cx| {
                feed(&mut pump, cx);
                responding.as_mut().poll(cx)
            })
            .await;
            let err = match responded {
                Ok(response) => {
                    // Processed: no second attempt, so no copy to keep.
                    upload.borrow_mut().forget_copy();
                    return answer(response, pump, stream);
                }
                Err(err) => err,
            };
            // The request body's own failure (too large, refused by a quota, cut by the
            // client) is what the client is told.
            if let Some(failure) = upload.borrow_mut().failure.take() {
                return Err(failure);
            }
            let unprocessed = never_processed(&err);
            if unprocessed == Some(Unprocessed::GoneAway) {
                stream.connection.close_to_new();
            }
            if unprocessed.is_none() || refused_on.is_some() || !upload.borrow().replayable() {
                return Err(failure(&err));
            }
            tracing::debug!(
                target: "sluice::upstream",
                reason = ?unprocessed,
                "the upstream did not process a stream: sending it again on another connection"
            );
            drop(pump);
            refused_on = Some(stream.connection.clone());
        }
    }

    /// A stream on a connection with room, avoiding the one a refusal came from; opens a
    /// connection when there is none and the pool may grow, else waits for one.
    async fn stream(
        &self,
        avoid: Option<&Rc<super::h2_connections::Connection>>,
    ) -> Result<H2Stream, Error> {
        let connections = &self.connections;
        loop {
            let changed = connections.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(stream) = connections.take(avoid) {
                return Ok(stream);
            }
            match connections.when_full() {
                NoRoom::Open => return self.open().await,
                NoRoom::Wait => connections.wait(changed).await,
                NoRoom::AtCap => {
                    // No other connection can be had: a refused stream goes back to the
                    // connection that refused it rather than wait for nothing.
                    if let Some(stream) = avoid.and_then(|_| connections.take(None)) {
                        return Ok(stream);
                    }
                    connections.wait(changed).await
                }
            }
        }
    }

    /// Opens a connection, waits (briefly) for the upstream's stream limit, and takes the
    /// first stream on it.
    async fn open(&self) -> Result<H2Stream, Error> {
        let _opening = self.connections.opening();
        let connect = self.connector.timeout;
        let io = tower_service::Service::call(&mut self.connector.clone(), self.origin.clone())
            .await
            .map_err(|failure| {
                if failure.is_not_h2() {
                    // The upstream changed its mind: ask again on the next request.
                    *self.offer.borrow_mut() = Offer::Unknown;
                }
                failure.into_error(connect)
            })?;
        let (sender, connection) = tokio::time::timeout(connect, self.handshake.handshake(io))
            .await
            .map_err(|_| Error::ConnectTimeout(connect.as_millis()))?
            .map_err(|err| Error::UpstreamUnreachable(chain(&err)))?;
        // The connection runs on a task of its own; the stream limit the upstream's SETTINGS
        // announce is read from it when a request looks for room (hyper reads them on another
        // task, which wakes nothing here). Until they come, a burst would all go to this
        // connection, so they are waited for, briefly.
        let driven = Rc::new(RefCell::new(Some(Box::pin(connection))));
        let driving = driven.clone();
        actix_rt::spawn(async move {
            let ended = std::future::poll_fn(|cx| match driving.borrow_mut().as_mut() {
                Some(connection) => connection.as_mut().poll(cx),
                None => Poll::Ready(Ok(())),
            })
            .await;
            // Dropped once ended: its sender then knows it is closed.
            driving.borrow_mut().take();
            if let Err(err) = ended {
                tracing::debug!(target: "sluice::upstream", "h2 connection ended: {}", chain(&err));
            }
        });
        let announced = move || match driven.try_borrow().as_deref() {
            Ok(Some(connection)) => Some(connection.current_max_send_streams()),
            Ok(None) => None,
            Err(_) => Some(usize::MAX),
        };
        let waited = std::time::Instant::now();
        while announced() == Some(usize::MAX) && !sender.is_closed() && waited.elapsed() < SETTLE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(self.connections.add(sender, Box::new(announced)))
    }
}

/// Why the upstream did not process a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unprocessed {
    /// `RST_STREAM` with `REFUSED_STREAM`.
    Refused,
    /// Above a GOAWAY's last stream id, or on a connection closed before it was sent.
    GoneAway,
}

/// Whether the failure guarantees the upstream never processed the stream (RFC 9113 §8.7).
fn never_processed(err: &hyper::Error) -> Option<Unprocessed> {
    if let Some(h2) = find_source::<h2::Error>(err) {
        if !h2.is_remote() {
            return None;
        }
        if h2.is_go_away() {
            return Some(Unprocessed::GoneAway);
        }
        if h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return Some(Unprocessed::Refused);
        }
        return None;
    }
    // hyper never handed the request to the connection (it had closed).
    err.is_canceled().then_some(Unprocessed::GoneAway)
}

fn answer(
    response: http::Response<hyper::body::Incoming>,
    pump: Option<Pump>,
    stream: H2Stream,
) -> Result<H2Answer, Error> {
    let (parts, body) = response.into_parts();
    let status = StatusCode::from_u16(parts.status.as_u16())
        .map_err(|err| Error::UpstreamBroken(err.to_string()))?;
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    Ok(H2Answer {
        status,
        headers,
        body,
        pump,
        stream,
    })
}

/// The upstream's answer over h2: its head, and its body to stream back.
pub struct H2Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: hyper::body::Incoming,
    /// What is left of the request body to send.
    pub pump: Option<Pump>,
    /// The stream, counted on its connection until the answer is read or dropped.
    pub stream: H2Stream,
}

/// Lets the pump move the request body on; forgets it once it is done.
pub(super) fn feed(pump: &mut Option<Pump>, cx: &mut Context<'_>) {
    if let Some(feeding) = pump.as_mut() {
        if feeding.as_mut().poll(cx).is_ready() {
            *pump = None;
        }
    }
}

/// TCP and TLS to the upstream within the connect timeout.
#[derive(Clone)]
struct UpstreamConnector {
    https: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

impl UpstreamConnector {
    async fn connect(mut self, to: http::Uri) -> Result<UpstreamIo, ConnectFailure> {
        use tower_service::Service;
        match tokio::time::timeout(self.timeout, self.https.call(to)).await {
            Err(_) => Err(ConnectFailure::Timeout),
            Ok(Err(err)) => Err(ConnectFailure::Failed(chain(&*err))),
            Ok(Ok(io)) => Ok(io),
        }
    }
}

/// hyper's client opens its connections through this. One the upstream did not take as h2
/// is refused: this client speaks nothing else.
impl tower_service::Service<http::Uri> for UpstreamConnector {
    type Response = UpstreamIo;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectFailure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, to: http::Uri) -> Self::Future {
        let connecting = self.clone().connect(to);
        Box::pin(async move {
            let io = connecting.await?;
            if io.connected().is_negotiated_h2() {
                Ok(io)
            } else {
                Err(ConnectFailure::NotH2)
            }
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
enum ConnectFailure {
    #[error("connection not established in time")]
    Timeout,
    #[error("{0}")]
    Failed(String),
    #[error("the upstream no longer picks HTTP/2")]
    NotH2,
}

impl ConnectFailure {
    fn is_not_h2(&self) -> bool {
        matches!(self, ConnectFailure::NotH2)
    }

    fn into_error(self, connect: Duration) -> Error {
        match self {
            ConnectFailure::Timeout => Error::ConnectTimeout(connect.as_millis()),
            other => Error::UpstreamUnreachable(other.to_string()),
        }
    }
}

/// The client-facing error for an exchange that failed once its connection was open: the
/// connection broke (connecting has failures of its own, in `H2Route::open`).
fn failure(err: &hyper::Error) -> Error {
    Error::UpstreamBroken(chain(err))
}

fn find_source<'e, T: std::error::Error + 'static>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

/// An error and its causes on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// The client's request body, as the request path hands it over.
type ClientBody = Pin<Box<dyn Stream<Item = Result<Bytes, Error>>>>;

/// The client's request body on its way upstream, and a copy of what has been sent of it
/// (up to `REPLAY_BYTES`) for a second attempt. The chunks are shared with what went out
/// (`Bytes`), and the copy is dropped once the upstream answered.
struct Upload {
    source: Option<ClientBody>,
    length: Option<u64>,
    /// Everything read from the client so far, while it fits in `REPLAY_BYTES`.
    copy: Option<Vec<Bytes>>,
    copied: usize,
    /// The client's body ended (all of it is in `copy`, if that is still kept).
    ended: bool,
    /// The failure the client's body ended with, for the request path.
    failure: Option<Error>,
}

impl Upload {
    fn new<S>(framing: RequestBody, body: S) -> Rc<RefCell<Self>>
    where
        S: Stream<Item = Result<Bytes, Error>> + 'static,
    {
        let (source, length): (Option<ClientBody>, _) = match framing {
            RequestBody::None => (None, None),
            RequestBody::Sized(length) => (Some(Box::pin(body)), Some(length)),
            RequestBody::Chunked => (Some(Box::pin(body)), None),
        };
        Rc::new(RefCell::new(Self {
            source,
            length,
            copy: Some(Vec::new()),
            copied: 0,
            ended: false,
            failure: None,
        }))
    }

    fn replayable(&self) -> bool {
        self.failure.is_none() && (self.source.is_none() || self.copy.is_some())
    }

    fn forget_copy(&mut self) {
        self.copy = None;
    }

    fn keep(&mut self, chunk: &Bytes) {
        if let Some(copy) = self.copy.as_mut() {
            self.copied += chunk.len();
            if self.copied > REPLAY_BYTES {
                self.copy = None;
            } else {
                copy.push(chunk.clone());
            }
        }
    }

    /// The body for one attempt, and its pump (none without a body): what was copied goes
    /// first, then the rest of the client's body as it comes.
    fn attempt(upload: &Rc<RefCell<Self>>) -> (OutgoingBody, Option<Pump>) {
        let (replay, length) = {
            let this = upload.borrow();
            if this.source.is_none() {
                return (
                    OutgoingBody {
                        chunks: None,
                        length: None,
                    },
                    None,
                );
            }
            (this.copy.clone().unwrap_or_default(), this.length)
        };
        let (tx, rx) = mpsc::channel(1);
        let upload = upload.clone();
        let pump = async move {
            for chunk in replay {
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            if upload.borrow().ended {
                return;
            }
            loop {
                // The borrow lasts one poll, never across a wait.
                let next = std::future::poll_fn(|cx| {
                    let mut this = upload.borrow_mut();
                    let source = this.source.as_mut().expect("a body has a source");
                    source.as_mut().poll_next(cx)
                });
                let next = tokio::select! {
                    next = next => next,
                    // hyper let go of the body (the exchange ended or was abandoned).
                    () = tx.closed() => return,
                };
                let chunk = match next {
                    None => {
                        upload.borrow_mut().ended = true;
                        return;
                    }
                    Some(Ok(chunk)) => {
                        upload.borrow_mut().keep(&chunk);
                        Ok(chunk)
                    }
                    Some(Err(err)) => {
                        upload.borrow_mut().failure = Some(err);
                        Err(BodyCut)
                    }
                };
                let last = chunk.is_err();
                if tx.send(chunk).await.is_err() || last {
                    return;
                }
            }
        };
        (
            OutgoingBody {
                chunks: Some(rx),
                length,
            },
            Some(pump.boxed_local()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload() -> Rc<RefCell<Upload>> {
        Upload::new(RequestBody::Chunked, futures_util::stream::empty())
    }

    #[test]
    fn a_body_is_kept_for_a_second_attempt_up_to_the_replay_bound() {
        let upload = upload();
        upload
            .borrow_mut()
            .keep(&Bytes::from(vec![b'a'; REPLAY_BYTES]));
        assert!(upload.borrow().replayable());
        upload.borrow_mut().keep(&Bytes::from_static(b"b"));
        assert!(
            !upload.borrow().replayable(),
            "past the bound: not sent again"
        );
    }

    #[test]
    fn a_body_whose_client_failed_is_not_sent_again() {
        let upload = upload();
        upload.borrow_mut().failure = Some(Error::ClientBody("cut".into()));
        assert!(!upload.borrow().replayable());
    }

    #[test]
    fn a_request_without_a_body_can_always_be_sent_again() {
        let upload = Upload::new(RequestBody::None, futures_util::stream::empty());
        upload.borrow_mut().forget_copy();
        assert!(upload.borrow().replayable());
    }
}
