//! HTTP/2 to an `https://` upstream. A worker learns once per plan, from one TLS handshake
//! offering h2 and http/1.1, which the upstream picks. When it picks h2, the worker's requests
//! go through hyper's pooled client restricted to HTTP/2, which opens one connection at a time
//! and carries concurrent requests on it as streams; when it picks http/1.1 they go through awc
//! as before. (A client that accepted either by ALPN would open a connection per request until
//! the first handshake finished, so a burst would still fan out.)

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
use futures_util::{Stream, StreamExt};
use hyper::body::{Frame, SizeHint};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::sync::mpsc;

use super::framing::RequestBody;
use crate::error::Error;

/// A connection to the upstream, TLS on TCP.
type UpstreamIo = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Feeds the client's body to hyper; polled on the request's own task (see `OutgoingBody`).
pub type Pump = LocalBoxFuture<'static, ()>;

const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// One worker's HTTP/2 client for one route, and what it has learnt of the upstream.
pub struct H2Route {
    client: Client<UpstreamConnector, OutgoingBody>,
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
        idle_keepalive: Duration,
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
        let client = Client::builder(TokioExecutor::new())
            // One connection being opened at a time per upstream; requests meanwhile wait for
            // it and then share it.
            .http2_only(true)
            // An answer its client does not read holds at most a stream window upstream; the
            // connection's window, shared by all of the worker's streams, is larger so that a
            // few such clients cannot stall the rest, and bounds what one connection buffers.
            .http2_initial_stream_window_size(STREAM_WINDOW)
            .http2_initial_connection_window_size(CONNECTION_WINDOW)
            // A connection that died silently fails its streams within this, not at their
            // first-byte timeout.
            .http2_keep_alive_interval(KEEP_ALIVE)
            .http2_keep_alive_timeout(KEEP_ALIVE)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle_keepalive)
            .build(connector.clone());
        Some(Rc::new(Self {
            client,
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

    /// Sends the request as a stream on the worker's h2 connection (opened when there is none).
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
        let (body, mut pump, body_failure) = OutgoingBody::pump(framing, body);
        let mut request = http::Request::new(body);
        *request.method_mut() = http::Method::from_bytes(method.as_str().as_bytes())
            .map_err(|err| Error::Internal(err.to_string()))?;
        *request.uri_mut() = url
            .parse()
            .map_err(|err: http::uri::InvalidUri| Error::Internal(err.to_string()))?;
        let outgoing = request.headers_mut();
        outgoing.reserve(headers.len());
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_str().as_bytes()),
                http::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                outgoing.append(name, value);
            }
        }
        let mut responding = self.client.request(request);
        let responded = std::future::poll_fn(|cx| {
            feed(&mut pump, cx);
            Pin::new(&mut responding).poll(cx)
        })
        .await;
        let response = match responded {
            Ok(response) => response,
            // The request body's own failure (too large, refused by a quota, cut by the client)
            // is what the client is told.
            Err(_) if body_failure.borrow().is_some() => {
                return Err(body_failure.take().expect("checked above"));
            }
            Err(err) => {
                if find_source::<ConnectFailure>(&err).is_some_and(ConnectFailure::is_not_h2) {
                    // The upstream changed its mind: ask again on the next request.
                    *self.offer.borrow_mut() = Offer::Unknown;
                }
                return Err(failure(&err, self.connector.timeout));
            }
        };
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
        })
    }
}

/// The upstream's answer over h2: its head, and its body to stream back.
pub struct H2Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: hyper::body::Incoming,
    /// What is left of the request body to send.
    pub pump: Option<Pump>,
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

/// The client-facing error for a failed exchange, kinds as on the HTTP/1.1 path: connecting
/// (timeout or not) versus a connection that broke.
fn failure(err: &hyper_util::client::legacy::Error, connect: Duration) -> Error {
    match find_source::<ConnectFailure>(err) {
        Some(failure) => failure.clone().into_error(connect),
        None if err.is_connect() => Error::UpstreamUnreachable(chain(err)),
        None => Error::UpstreamBroken(chain(err)),
    }
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

/// The request body as hyper takes it (its connection tasks need it `Send`): the client's
/// chunks handed over one at a time by the pump, so no more than one chunk waits between the
/// client and the upstream. The pump reads the client's upload, so it runs where the request
/// handler runs (the upload wakes one task only): beside the wait for the answer's head, then
/// inside the answer's body.
struct OutgoingBody {
    chunks: Option<mpsc::Receiver<Result<Bytes, BodyCut>>>,
    length: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body failed before its end")]
struct BodyCut;

impl OutgoingBody {
    /// The body and its pump (none without a body); the failure the body ended with, if any,
    /// is left in the returned cell for the request path.
    fn pump<S>(framing: RequestBody, body: S) -> (Self, Option<Pump>, Rc<RefCell<Option<Error>>>)
    where
        S: Stream<Item = Result<Bytes, Error>> + 'static,
    {
        let failure = Rc::new(RefCell::new(None));
        let length = match framing {
            RequestBody::None => {
                return (
                    Self {
                        chunks: None,
                        length: None,
                    },
                    None,
                    failure,
                )
            }
            RequestBody::Sized(length) => Some(length),
            RequestBody::Chunked => None,
        };
        let (tx, rx) = mpsc::channel(1);
        let failed = failure.clone();
        let pump = async move {
            let mut body = std::pin::pin!(body);
            loop {
                let next = tokio::select! {
                    next = body.next() => next,
                    // hyper let go of the body (the exchange ended or was abandoned).
                    () = tx.closed() => return,
                };
                let chunk = match next {
                    None => return,
                    Some(Ok(chunk)) => Ok(chunk),
                    Some(Err(err)) => {
                        *failed.borrow_mut() = Some(err);
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
            Self {
                chunks: Some(rx),
                length,
            },
            Some(pump.boxed_local()),
            failure,
        )
    }
}

impl hyper::body::Body for OutgoingBody {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyCut>>> {
        let Some(chunks) = self.chunks.as_mut() else {
            return Poll::Ready(None);
        };
        match chunks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(chunk.map(Frame::data))),
            Poll::Ready(None) => {
                self.chunks = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_none()
    }

    /// An exact size declares `content-length` upstream, as the client declared it.
    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}
