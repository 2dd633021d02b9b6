//! An HTTPS upstream that speaks HTTP/2 frame by frame, for what a library server will not do
//! on cue: its first connection that carries requests sends a GOAWAY whose last stream id is
//! low while later streams are already on their way, or refuses streams with `REFUSED_STREAM`.
//! Every other connection answers each request with `stream-text.sse`. It counts the requests
//! it answered, so tests can tell that an unprocessed stream was sent again exactly once.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::fixture;
use super::test_ca::TestCa;

/// What the first connection with requests does to them.
#[derive(Debug, Clone, Copy)]
pub enum FirstConnection {
    /// Waits until `streams` requests have arrived (or a second passed), sends GOAWAY naming
    /// the `processed`-th as the last stream it processes, answers those, and closes.
    GoAway { streams: usize, processed: usize },
    /// Answers the first `processed` requests and resets every later stream with
    /// `REFUSED_STREAM`.
    Refuse { processed: usize },
}

pub struct RawH2Upstream {
    pub addr: SocketAddr,
    pub ca_pem: String,
    answered: Arc<AtomicUsize>,
    with_requests: Arc<AtomicUsize>,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const REFUSED_STREAM: u32 = 0x7;

impl RawH2Upstream {
    /// Announces `max_streams` concurrent streams on every connection.
    pub fn start(first: FirstConnection, max_streams: u32) -> Self {
        let ca = TestCa::new();
        let mut config = ca.server_config();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let answered = Arc::new(AtomicUsize::new(0));
        let with_requests = Arc::new(AtomicUsize::new(0));
        let (counted, connections) = (answered.clone(), with_requests.clone());
        let addr = super::serve_on_own_thread(move |listener| async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counted, connections) =
                    (acceptor.clone(), counted.clone(), connections.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, first, max_streams, counted, connections).await;
                    }
                });
            }
        });
        Self {
            addr,
            ca_pem: ca.pem,
            answered,
            with_requests,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Requests answered, on every connection.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Connections on which at least one request arrived.
    pub fn connections_with_requests(&self) -> usize {
        self.with_requests.load(Ordering::SeqCst)
    }
}

type Tls = tokio::io::WriteHalf<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

/// A frame as read: type, flags, stream id, payload.
type Frame = (u8, u8, u32, Vec<u8>);

async fn write_frame(
    io: &mut Tls,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    io.write_all(&frame).await
}

/// `:status: 200` (static table entry 8) and `content-type: text/event-stream` (a literal
/// whose name is static entry 31), no dynamic table.
fn answer_head() -> Vec<u8> {
    let mut block = vec![0x88, 0x0f, 0x10, 17];
    block.extend_from_slice(b"text/event-stream");
    block
}

async fn answer(io: &mut Tls, stream: u32, answered: &AtomicUsize) -> std::io::Result<()> {
    write_frame(io, HEADERS, END_HEADERS, stream, &answer_head()).await?;
    let body = fixture("stream-text.sse");
    write_frame(io, DATA, END_STREAM, stream, body.as_bytes()).await?;
    io.flush().await?;
    answered.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

async fn serve(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    first: FirstConnection,
    max_streams: u32,
    answered: Arc<AtomicUsize>,
    with_requests: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let (mut reader, mut io) = tokio::io::split(tls);
    let mut preface = [0u8; 24];
    reader.read_exact(&mut preface).await?;
    // Frames are read on a task of their own, so that waiting for one can time out safely.
    let (frames_tx, mut frames) = tokio::sync::mpsc::unbounded_channel::<Frame>();
    tokio::spawn(async move {
        loop {
            let mut head = [0u8; 9];
            if reader.read_exact(&mut head).await.is_err() {
                return;
            }
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if reader.read_exact(&mut payload).await.is_err()
                || frames_tx.send((head[3], head[4], stream, payload)).is_err()
            {
                return;
            }
        }
    });
    let mut settings = vec![0x00, 0x03];
    settings.extend_from_slice(&max_streams.to_be_bytes());
    write_frame(&mut io, SETTINGS, 0, 0, &settings).await?;
    io.flush().await?;

    // Decided when the first request arrives: whether this is the first such connection.
    let mut special: Option<bool> = None;
    let mut heads: Vec<u32> = Vec::new();
    // GoAway: requests complete but not answered yet, and the last stream it processes.
    let mut complete: Vec<u32> = Vec::new();
    let mut last_processed: Option<u32> = None;
    // Streams it has nothing more to do for (answered, or refused).
    let mut done: Vec<u32> = Vec::new();
    let mut held_since: Option<tokio::time::Instant> = None;
    loop {
        if let (Some(true), FirstConnection::GoAway { streams, processed }) = (special, first) {
            let waited = held_since.is_some_and(|t| t.elapsed() > Duration::from_secs(1));
            if last_processed.is_none() && (heads.len() >= streams || waited) {
                let mut ids = heads.clone();
                ids.sort();
                let last = ids[processed.min(ids.len()) - 1];
                let mut payload = last.to_be_bytes().to_vec();
                payload.extend_from_slice(&0u32.to_be_bytes());
                write_frame(&mut io, GOAWAY, 0, 0, &payload).await?;
                io.flush().await?;
                last_processed = Some(last);
            }
            if let Some(last) = last_processed {
                for id in complete.drain(..).filter(|id| *id <= last) {
                    answer(&mut io, id, &answered).await?;
                    done.push(id);
                }
                // Every stream it processes answered: the connection closes.
                let owed = heads.iter().filter(|id| **id <= last).count();
                if done.len() == owed {
                    io.shutdown().await?;
                    return Ok(());
                }
            }
        }
        let next = tokio::time::timeout(Duration::from_millis(50), frames.recv()).await;
        let Ok(next) = next else {
            continue;
        };
        let Some((kind, flags, stream, payload)) = next else {
            return Ok(());
        };
        let ended = match kind {
            SETTINGS if flags & ACK == 0 => {
                write_frame(&mut io, SETTINGS, ACK, 0, &[]).await?;
                io.flush().await?;
                false
            }
            PING if flags & ACK == 0 => {
                write_frame(&mut io, PING, ACK, 0, &payload).await?;
                io.flush().await?;
                false
            }
            HEADERS => {
                if special.is_none() {
                    let n = with_requests.fetch_add(1, Ordering::SeqCst);
                    special = Some(n == 0);
                    held_since = Some(tokio::time::Instant::now());
                }
                heads.push(stream);
                if let (Some(true), FirstConnection::Refuse { processed }) = (special, first) {
                    if heads.len() > processed {
                        write_frame(
                            &mut io,
                            RST_STREAM,
                            0,
                            stream,
                            &REFUSED_STREAM.to_be_bytes(),
                        )
                        .await?;
                        io.flush().await?;
                        done.push(stream);
                    }
                }
                flags & END_STREAM != 0
            }
            DATA => flags & END_STREAM != 0,
            _ => false,
        };
        if !ended || done.contains(&stream) {
            continue;
        }
        match (special, first) {
            (Some(true), FirstConnection::GoAway { .. }) => complete.push(stream),
            _ => answer(&mut io, stream, &answered).await?,
        }
    }
}
