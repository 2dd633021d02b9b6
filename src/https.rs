//! The HTTPS listener's connections: each worker does its own TLS handshakes, bounded so that
//! connections that never finish theirs cannot keep real clients out, and tells HTTP/2 clients
//! how many streams one connection may have open.
//!
//! - A handshake has [`HANDSHAKE_TIMEOUT`] to finish. At most [`MAX_PENDING_HANDSHAKES`] are
//!   unfinished per worker; one more abandons the oldest. New connections are always accepted:
//!   a crowd of idle ones (a slowloris before the ClientHello) holds no slot a newcomer waits
//!   for, and a real handshake, which takes milliseconds, is never the oldest for long.
//!   (actix's own TLS acceptor stops accepting once its handshake slots are full: 1,500 idle
//!   connections kept every real request out.)
//! - HTTP/2 answers with `SETTINGS_MAX_CONCURRENT_STREAMS` = [`MAX_CONCURRENT_STREAMS`]: actix-http
//!   sends no limit of its own (and has no setting for one), so the limit is written into the
//!   server's first SETTINGS frame on its way out (see [`AdvertisedLimits`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{HttpService, Protocol, Request, Response};
use actix_server::ServerBuilder;
use actix_service::{
    fn_service, map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt as _,
};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long a client has for its TLS handshake, from the connection's accept.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Unfinished handshakes a worker keeps; past it the oldest is abandoned.
pub const MAX_PENDING_HANDSHAKES: usize = 2048;
/// Streams one HTTP/2 connection may have open at once (RFC 9113 recommends no fewer than 100).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// An accepted HTTPS connection as actix-http reads it.
pub type HttpsStream = AdvertisedLimits<TlsStream<TcpStream>>;

/// Serves `app` over HTTPS on `listener`: per worker, TLS handshakes as this module says, then
/// actix-http with the settings the plain listener has (see `server`).
pub fn listen<F, I, S, B>(
    builder: ServerBuilder,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: F,
) -> io::Result<ServerBuilder>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let stopping = builder.graceful_shutdown_signal();
    builder.listen(format!("sluice-https-{addr}"), listener, move || {
        let handshakes = Rc::new(RefCell::new(Handshakes::default()));
        let tls = tls.clone();
        let stopping = stopping.clone();
        let app = app()
            .into_factory()
            .map_err(|err| err.into().error_response());
        let http = HttpService::build()
            .graceful_shutdown_signal(move || {
                let stopping = stopping.clone();
                async move { stopping.notified().await }
            })
            // As actix-web's own listeners (see `server`): 5 s for a request's head, 1 s for a
            // closing client, half-closed connections not kept.
            .client_request_timeout(Duration::from_secs(5))
            .client_disconnect_timeout(Duration::from_secs(1))
            .h1_allow_half_closed(false)
            .secure()
            .local_addr(addr)
            // Nothing in sluice reads the app's host or scheme settings.
            .finish(map_config(app, |()| AppConfig::default()));
        fn_service(move |tcp: TcpStream| handshake(tcp, tls.clone(), handshakes.clone()))
            .and_then(http)
    })
}

/// One worker's TLS handshakes in progress, oldest first.
#[derive(Default)]
pub struct Handshakes {
    next: u64,
    pending: BTreeMap<u64, CancellationToken>,
}

impl Handshakes {
    /// Registers a new handshake, abandoning the oldest when `max` are already under way.
    fn enter(&mut self, max: usize) -> (u64, CancellationToken) {
        while self.pending.len() >= max {
            match self.pending.pop_first() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        let id = self.next;
        self.next += 1;
        let token = CancellationToken::new();
        self.pending.insert(id, token.clone());
        (id, token)
    }

    fn leave(&mut self, id: u64) {
        self.pending.remove(&id);
    }
}

/// Takes an accepted TCP connection through its TLS handshake (bounded as the module says) and
/// tells actix-http which protocol ALPN chose.
pub async fn handshake(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    handshakes: Rc<RefCell<Handshakes>>,
) -> Result<(HttpsStream, Protocol, Option<SocketAddr>), DispatchError> {
    let peer = tcp.peer_addr().ok();
    // Answers' heads and first bytes often go in separate small writes (see `server`).
    let _ = tcp.set_nodelay(true);
    let (id, abandoned) = handshakes.borrow_mut().enter(MAX_PENDING_HANDSHAKES);
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp)) => accepted,
        () = abandoned.cancelled() => {
            return Err(DispatchError::Io(io::Error::other("TLS handshake abandoned: too many unfinished")));
        }
    };
    handshakes.borrow_mut().leave(id);
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => return Err(DispatchError::Io(err)),
        Err(_) => return Err(DispatchError::SlowRequestTimeout),
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let protocol = if h2 { Protocol::Http2 } else { Protocol::Http1 };
    Ok((AdvertisedLimits::new(tls, h2), protocol, peer))
}

/// A connection whose first outgoing HTTP/2 frame, the server's SETTINGS, gains
/// `SETTINGS_MAX_CONCURRENT_STREAMS`. Everything else passes untouched; on HTTP/1.1 it is a
/// plain pass-through.
pub struct AdvertisedLimits<T> {
    io: T,
    state: Rewrite,
}

enum Rewrite {
    /// The first frame's bytes so far (its 9-byte head tells its length).
    FirstFrame(Vec<u8>),
    /// The rewritten frame, still to be written from `written` on.
    Writing {
        frame: Vec<u8>,
        written: usize,
    },
    Done,
}

const FRAME_HEAD: usize = 9;
const SETTINGS: u8 = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

impl<T> AdvertisedLimits<T> {
    fn new(io: T, h2: bool) -> Self {
        let state = if h2 {
            Rewrite::FirstFrame(Vec::with_capacity(64))
        } else {
            Rewrite::Done
        };
        Self { io, state }
    }
}

/// The server's first frame with the stream limit added, when it is the SETTINGS frame the
/// protocol requires there; any other frame unchanged.
fn with_stream_limit(mut frame: Vec<u8>) -> Vec<u8> {
    let is_settings = frame[3] == SETTINGS && frame[4] & 0x1 == 0 && frame[5..9] == [0; 4];
    if !is_settings {
        return frame;
    }
    let length = u32::from_be_bytes([0, frame[0], frame[1], frame[2]]) + 6;
    frame[..3].copy_from_slice(&length.to_be_bytes()[1..]);
    frame.extend_from_slice(&SETTINGS_MAX_CONCURRENT_STREAMS.to_be_bytes());
    frame.extend_from_slice(&MAX_CONCURRENT_STREAMS.to_be_bytes());
    frame
}

impl<T: AsyncWrite + Unpin> AdvertisedLimits<T> {
    /// Writes out what is left of the rewritten frame.
    fn poll_frame_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Rewrite::Writing { frame, written } = &mut self.state {
            if *written == frame.len() {
                self.state = Rewrite::Done;
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, &frame[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AdvertisedLimits<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AdvertisedLimits<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Rewrite::FirstFrame(held) = &mut this.state {
            let wanted = if held.len() < FRAME_HEAD {
                FRAME_HEAD - held.len()
            } else {
                let length = u32::from_be_bytes([0, held[0], held[1], held[2]]) as usize;
                FRAME_HEAD + length - held.len()
            };
            let taken = wanted.min(buf.len());
            held.extend_from_slice(&buf[..taken]);
            let complete = held.len() >= FRAME_HEAD && {
                let length = u32::from_be_bytes([0, held[0], held[1], held[2]]) as usize;
                held.len() == FRAME_HEAD + length
            };
            if complete {
                let frame = with_stream_limit(std::mem::take(held));
                this.state = Rewrite::Writing { frame, written: 0 };
                // Written now if it can be; else by the next write or flush.
                if let Poll::Ready(Err(err)) = this.poll_frame_out(cx) {
                    return Poll::Ready(Err(err));
                }
            }
            return Poll::Ready(Ok(taken));
        }
        if this.poll_frame_out(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_frame_out(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_frame_out(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What the server writes first: SETTINGS (initial window size 1 MiB), then a PING.
    fn server_preface() -> Vec<u8> {
        let mut bytes = vec![0, 0, 6, SETTINGS, 0, 0, 0, 0, 0, 0, 4, 0, 0x10, 0, 0];
        bytes.extend_from_slice(&[0, 0, 8, 0x6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes
    }

    async fn written(chunks: &[&[u8]], h2: bool) -> Vec<u8> {
        let mut out = AdvertisedLimits::new(Vec::new(), h2);
        for chunk in chunks {
            out.write_all(chunk).await.unwrap();
        }
        out.flush().await.unwrap();
        out.io
    }

    #[tokio::test]
    async fn the_first_settings_frame_gains_the_stream_limit_however_it_is_written() {
        let preface = server_preface();
        let mut expected = vec![0, 0, 12, SETTINGS, 0, 0, 0, 0, 0, 0, 4, 0, 0x10, 0, 0];
        expected.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        expected.extend_from_slice(&preface[15..]);
        assert_eq!(written(&[&preface], true).await, expected);
        for cut in 1..preface.len() {
            let got = written(&[&preface[..cut], &preface[cut..]], true).await;
            assert_eq!(got, expected, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = preface.chunks(1).collect();
        assert_eq!(written(&bytes, true).await, expected);
    }

    #[tokio::test]
    async fn http1_and_other_first_frames_pass_untouched() {
        let preface = server_preface();
        assert_eq!(written(&[&preface], false).await, preface);
        let ping_first = preface[15..].to_vec();
        assert_eq!(written(&[&ping_first], true).await, ping_first);
    }

    #[test]
    fn past_the_limit_the_oldest_handshake_is_abandoned() {
        let mut handshakes = Handshakes::default();
        let (first, first_token) = handshakes.enter(2);
        let (_, second_token) = handshakes.enter(2);
        let (_, third_token) = handshakes.enter(2);
        assert!(first_token.is_cancelled());
        assert!(!second_token.is_cancelled() && !third_token.is_cancelled());
        handshakes.leave(first);
        assert_eq!(handshakes.pending.len(), 2);
    }
}
