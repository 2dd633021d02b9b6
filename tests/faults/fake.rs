//! A raw TCP upstream on 127.0.0.1 that misbehaves at the HTTP level on purpose: it follows a
//! per-connection script of writes, pauses and closes, and records what each connection saw
//! (request head, body bytes, when sluice closed its side).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One thing the fake does on a connection, in order.
#[derive(Clone, Debug)]
pub enum Step {
    /// Read the request head (up to the blank line).
    ReadHead,
    /// Read the request body the head announced (`content-length` or chunked).
    ReadBody,
    Write(Vec<u8>),
    /// Write these bytes one at a time, pausing before each.
    Drip(Vec<u8>, Duration),
    /// Keep the connection open and read until sluice closes it (noting when).
    Hold,
    /// Close the connection now.
    Close,
}

pub type Script = Vec<Step>;

/// What one accepted connection saw.
#[derive(Clone, Debug, Default)]
pub struct Conn {
    /// The request head as text, when one was read.
    pub head: Option<String>,
    pub body_bytes: usize,
    /// When the fake saw sluice close (or reset) the connection.
    pub peer_closed_at: Option<Instant>,
}

impl Conn {
    /// The request line's target (`/v1/messages?x=y`).
    pub fn target(&self) -> Option<String> {
        let head = self.head.as_ref()?;
        head.lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .map(str::to_string)
    }

    /// A request header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.as_ref()?.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

type Chooser = Arc<dyn Fn(usize) -> Script + Send + Sync>;

/// A misbehaving upstream; every connection runs the script the chooser gives for its index.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeUpstream {
    /// Every connection runs `script`.
    pub fn start(script: Script) -> Self {
        Self::start_with(move |_| script.clone())
    }

    /// Connection number `n` (from 0) runs `choose(n)`. A script that reads the head can make
    /// the rest depend on it via [`FakeUpstream::by_target`].
    pub fn start_with(choose: impl Fn(usize) -> Script + Send + Sync + 'static) -> Self {
        Self::spawn(Arc::new(choose), None)
    }

    /// Reads each request head, then runs the script `choose(target)` gives for its target.
    pub fn by_target(choose: impl Fn(&str) -> Script + Send + Sync + 'static) -> Self {
        let by_target: TargetChooser = Arc::new(choose);
        Self::spawn(Arc::new(|_| vec![Step::ReadHead]), Some(by_target))
    }

    fn spawn(choose: Chooser, by_target: Option<TargetChooser>) -> Self {
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let record = conns.clone();
        // Once stopped, every connection task is dropped with the runtime, closing its socket.
        let addr = crate::support::serve_on_own_thread(move |listener| async move {
            let accept = async {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let index = {
                        let mut conns = record.lock().unwrap();
                        conns.push(Conn::default());
                        conns.len() - 1
                    };
                    let script = choose(index);
                    let record = record.clone();
                    let by_target = by_target.clone();
                    tokio::spawn(run(stream, script, by_target, record, index));
                }
            };
            tokio::select! {
                _ = accept => {},
                _ = stop_rx => {},
            }
        });
        Self {
            addr,
            conns,
            stop: Some(stop_tx),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }

    /// How many connections were accepted.
    pub fn accepted(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Waits until connection `index` has been closed by sluice; returns when, or `None`.
    pub fn wait_peer_closed(&self, index: usize, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(at) = self.conns().get(index).and_then(|c| c.peer_closed_at) {
                return Some(at);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type TargetChooser = Arc<dyn Fn(&str) -> Script + Send + Sync>;

async fn run(
    mut stream: TcpStream,
    script: Script,
    by_target: Option<TargetChooser>,
    record: Arc<Mutex<Vec<Conn>>>,
    index: usize,
) {
    let mut buffered: Vec<u8> = Vec::new();
    let mut steps: std::collections::VecDeque<Step> = script.into();
    let mut chosen = by_target.is_none();
    while let Some(step) = steps.pop_front() {
        let ok = match step {
            Step::ReadHead => match read_head(&mut stream, &mut buffered).await {
                Some(head) => {
                    let target = head
                        .lines()
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or_default()
                        .to_string();
                    record.lock().unwrap()[index].head = Some(head);
                    if !chosen {
                        chosen = true;
                        if let Some(choose) = &by_target {
                            steps = choose(&target).into();
                        }
                    }
                    true
                }
                None => false,
            },
            Step::ReadBody => {
                let head = record.lock().unwrap()[index].head.clone();
                let n = read_body(&mut stream, head.as_deref(), &mut buffered).await;
                record.lock().unwrap()[index].body_bytes = n;
                true
            }
            Step::Write(bytes) => stream.write_all(&bytes).await.is_ok(),
            Step::Drip(bytes, pause) => {
                let mut ok = true;
                for byte in bytes {
                    tokio::time::sleep(pause).await;
                    if stream.write_all(&[byte]).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                ok
            }
            Step::Hold => {
                let mut sink = [0u8; 4096];
                loop {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                false
            }
            Step::Close => return,
        };
        if !ok {
            // sluice closed its side (or a read failed): note when.
            record.lock().unwrap()[index].peer_closed_at = Some(Instant::now());
            return;
        }
    }
}

/// Reads up to and including the blank line; bytes after it stay in `buffered`.
async fn read_head(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(buffered, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffered[..end]).into_owned();
            buffered.drain(..end + 4);
            return Some(head);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffered.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads the body the head announced; returns its size in bytes on the wire.
async fn read_body(stream: &mut TcpStream, head: Option<&str>, buffered: &mut Vec<u8>) -> usize {
    let head = head.unwrap_or_default().to_ascii_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    let mut chunk = [0u8; 16384];
    loop {
        let done = match length {
            Some(n) => buffered.len() >= n,
            None if chunked => buffered.ends_with(b"0\r\n\r\n"),
            None => true,
        };
        if done {
            let n = buffered.len();
            buffered.clear();
            return n;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return buffered.len(),
            Ok(n) => buffered.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// Building blocks for scripts.

/// A complete JSON answer with a length, then the connection closes.
pub fn json_answer(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The head of a chunked event stream.
pub fn sse_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec()
}

/// The head of an event stream and its first events (message_start: 25 input tokens).
pub fn sse_started() -> Vec<u8> {
    let mut bytes = sse_head();
    bytes.extend(chunk(SSE_START.as_bytes()));
    bytes
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The end of a chunked body.
pub fn last_chunk() -> Vec<u8> {
    b"0\r\n\r\n".to_vec()
}

/// A well-behaved exchange: read the request, answer with Anthropic's small message.
pub fn answers_ok() -> Script {
    vec![
        Step::ReadHead,
        Step::ReadBody,
        Step::Write(json_answer(200, MESSAGE)),
        Step::Close,
    ]
}

pub const MESSAGE: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":10}}"#;

/// The first two events of a streamed answer (message_start carries input usage).
pub const SSE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_02\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";

/// The rest of that streamed answer.
pub const SSE_END: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
