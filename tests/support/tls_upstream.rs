//! An HTTPS upstream on 127.0.0.1 built on hyper, for the HTTP/2 upstream tests: a test CA of
//! its own, ALPN as told (h2 and http/1.1, or http/1.1 only), and it counts the connections it
//! accepts, notes the HTTP version of every request, and can end its open connections with a
//! GOAWAY or at once.
//!
//! Paths: `/v1/status/NNN` answers status NNN with an Anthropic error body; `/v1/slow` answers
//! after 5 s; anything else streams `stream-text.sse` one event per `pause`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use super::fixture;
use super::test_ca::TestCa;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `HTTP/2.0` or `HTTP/1.1`.
    pub version: String,
    pub path: String,
    pub body: Bytes,
}

#[derive(Default)]
struct Shared {
    accepted: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

pub struct TlsUpstream {
    pub addr: SocketAddr,
    /// The CA that signed its certificate, as PEM.
    pub ca_pem: String,
    shared: Arc<Shared>,
    go_away: watch::Sender<u32>,
    reset: watch::Sender<u32>,
    stop: watch::Sender<bool>,
}

/// The ALPN protocols the upstream accepts, in its order of preference.
pub const H2_AND_HTTP11: &[&[u8]] = &[b"h2", b"http/1.1"];
pub const HTTP11_ONLY: &[&[u8]] = &[b"http/1.1"];

impl TlsUpstream {
    pub fn start(alpn: &[&[u8]], pause: Duration) -> Self {
        Self::start_with_stream_limit(alpn, pause, None)
    }

    /// As `start`, announcing `SETTINGS_MAX_CONCURRENT_STREAMS = limit` on h2 (hyper's
    /// default otherwise) and refusing streams over it.
    pub fn start_with_stream_limit(alpn: &[&[u8]], pause: Duration, limit: Option<u32>) -> Self {
        let ca = TestCa::new();
        let mut config = ca.server_config();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let shared = Arc::new(Shared::default());
        let (go_away, go_away_rx) = watch::channel(0);
        let (reset, reset_rx) = watch::channel(0);
        let (stop, mut stop_rx) = watch::channel(false);
        let state = shared.clone();
        let addr = super::serve_on_own_thread(move |listener| async move {
            loop {
                let tcp = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                    _ = stop_rx.changed() => return,
                };
                state.accepted.fetch_add(1, Ordering::SeqCst);
                // Only what is asked after this connection arrived applies to it.
                let (mut go_away, mut reset) = (go_away_rx.clone(), reset_rx.clone());
                go_away.borrow_and_update();
                reset.borrow_and_update();
                tokio::spawn(serve(
                    tcp,
                    acceptor.clone(),
                    state.clone(),
                    pause,
                    go_away,
                    reset,
                    limit,
                ));
            }
        });
        Self {
            addr,
            ca_pem: ca.pem,
            shared,
            go_away,
            reset,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Connections accepted so far (TCP, whether or not a request followed).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// The most answers it was streaming at once.
    pub fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Ends every open connection gracefully: GOAWAY on h2, close after the answer on 1.1.
    pub fn go_away(&self) {
        self.go_away.send_modify(|n| *n += 1);
    }

    /// Drops every open connection at once.
    pub fn reset(&self) {
        self.reset.send_modify(|n| *n += 1);
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    pause: Duration,
    mut go_away: watch::Receiver<u32>,
    mut reset: watch::Receiver<u32>,
    limit: Option<u32>,
) {
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let service = hyper::service::service_fn(move |req| answer(req, shared.clone(), pause));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Some(limit) = limit {
        builder.http2().max_concurrent_streams(limit);
    }
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            Ok(()) = go_away.changed() => connection.as_mut().graceful_shutdown(),
            Ok(()) = reset.changed() => return,
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    pause: Duration,
) -> Result<Response<Body>, Infallible> {
    let version = format!("{:?}", req.version());
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    shared.seen.lock().unwrap().push(Seen {
        version,
        path: path.clone(),
        body,
    });
    if let Some(status) = path.strip_prefix("/v1/status/") {
        let body = format!(
            r#"{{"type":"error","error":{{"type":"api_error","message":"mock said {status}"}}}}"#
        );
        return Ok(Response::builder()
            .status(status.parse::<u16>().unwrap())
            .header("content-type", "application/json")
            .header("x-mock", "error")
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap());
    }
    if path == "/v1/slow" {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let guard = InFlight(shared);
    let events: Vec<Bytes> = fixture("stream-text.sse")
        .split_inclusive("\n\n")
        .map(|e| Bytes::from(e.to_string()))
        .collect();
    let stream = futures_util::stream::iter(events).then(move |event| {
        let _keep = &guard;
        async move {
            tokio::time::sleep(pause).await;
            Ok::<_, Infallible>(Frame::data(event))
        }
    });
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap())
}

/// Counts an answer as streaming until its body is dropped.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
