//! Test support: a programmable mock upstream on 127.0.0.1, and a builder that starts the real
//! sluice binary on a free port with given settings and captures its logs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::StreamExt;

pub const CLIENT_API_KEY: &str = "sk-ant-api03-test-client-key-0123456789";
pub const CLIENT_OAUTH: &str = "sk-ant-oat01-test-client-oauth-0123456789";
pub const SERVER_KEY: &str = "sk-ant-api03-test-server-key-9876543210";
pub const ACCESS_KEY: &str = "sluice-test-access-key-alice-5f3e";
pub const ADMIN_TOKEN: &str = "sluice-test-admin-token-77aa";

pub fn fixture(name: &str) -> String {
    protocol_fixture("anthropic", name)
}

/// A recorded answer of `tests/fixtures/{dir}/`.
pub fn protocol_fixture(dir: &str, name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    std::fs::read_to_string(format!("{path}{dir}/{name}")).unwrap()
}

/// What the mock upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lower-cased, in arrival order per name.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    /// The connection it came on (sluice's end of it).
    pub peer: Option<SocketAddr>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// How the mock answers.
#[derive(Clone)]
pub enum Reply {
    /// Status, headers, body (sent with content-length).
    Full(u16, Vec<(String, String)>, Bytes),
    /// An event stream: each event is released only after the test calls `Gate::release`
    /// (the first one immediately).
    GatedEvents(Vec<String>, Gate),
    /// A chunked body sent as the given chunks with a pause before each.
    Chunks(u16, Vec<(String, String)>, Vec<(Duration, Bytes)>),
    /// Headers of an event stream, then silence (never ends).
    HeadersThenSilence,
    /// No answer for this long, then a 200.
    Delay(Duration),
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Full(
            status,
            vec![("content-type".into(), "application/json".into())],
            Bytes::from(body.to_string()),
        )
    }

    pub fn sse(body: &str) -> Reply {
        Reply::Chunks(
            200,
            vec![("content-type".into(), "text/event-stream".into())],
            vec![(Duration::ZERO, Bytes::from(body.to_string()))],
        )
    }
}

/// Lets a test release mock SSE events one at a time.
#[derive(Clone)]
pub struct Gate {
    tx: tokio::sync::mpsc::UnboundedSender<()>,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>>,
    /// How many events the mock has sent so far.
    pub sent: Arc<Mutex<usize>>,
}

impl Gate {
    pub fn new() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            sent: Arc::new(Mutex::new(0)),
        }
    }
    pub fn release(&self) {
        let _ = self.tx.send(());
    }
    pub fn sent(&self) -> usize {
        *self.sent.lock().unwrap()
    }
}

type Responder = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// An HTTP/1.1 upstream on 127.0.0.1 (optionally TLS) that records every request.
pub struct MockUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    responder: Arc<Mutex<Responder>>,
    handle: actix_web::dev::ServerHandle,
}

struct MockState {
    received: Arc<Mutex<Vec<Received>>>,
    responder: Arc<Mutex<Responder>>,
}

impl MockUpstream {
    /// Answers every request with a small Anthropic message.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    pub fn start_tls(config: rustls::ServerConfig) -> Self {
        Self::start_inner(Some(config))
    }

    fn start_inner(tls: Option<rustls::ServerConfig>) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let default: Responder = Arc::new(|_| Reply::json(200, &fixture("message.json")));
        let responder = Arc::new(Mutex::new(default));
        let (tx, rx) = std::sync::mpsc::channel();
        let (r, s) = (received.clone(), responder.clone());
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let state = web::Data::new(MockState {
                    received: r,
                    responder: s,
                });
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .default_service(web::to(mock_handler))
                })
                .workers(1)
                .disable_signals();
                let server = match tls {
                    Some(config) => server.bind_rustls_0_23("127.0.0.1:0", config),
                    None => server.bind("127.0.0.1:0"),
                }
                .unwrap();
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                let _ = server.await;
            });
        });
        let (addr, handle) = rx.recv().unwrap();
        Self {
            addr,
            received,
            responder,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn reply(&self, f: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        *self.responder.lock().unwrap() = Arc::new(f);
    }

    pub fn always(&self, reply: Reply) {
        self.reply(move |_| reply.clone());
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.received().pop().expect("the mock received a request")
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(handle.stop(false));
        });
    }
}

async fn mock_handler(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<MockState>,
) -> HttpResponse {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    let mut headers = Vec::new();
    for (name, value) in req.headers().iter() {
        headers.push((name.as_str().to_string(), value.as_bytes().to_vec()));
    }
    let received = Received {
        method: req.method().to_string(),
        target: req.uri().to_string(),
        headers,
        body: body.freeze(),
        peer: req.peer_addr(),
    };
    let responder = state.responder.lock().unwrap().clone();
    let reply = responder(&received);
    state.received.lock().unwrap().push(received);
    match reply {
        Reply::Full(status, headers, body) => with_headers(status, &headers).body(body),
        Reply::Chunks(status, headers, chunks) => {
            let stream = futures_util::stream::iter(chunks).then(|(pause, chunk)| async move {
                tokio::time::sleep(pause).await;
                Ok::<_, actix_web::Error>(chunk)
            });
            with_headers(status, &headers).streaming(stream)
        }
        Reply::GatedEvents(events, gate) => {
            let stream = futures_util::stream::iter(events.into_iter().enumerate()).then(
                move |(i, event)| {
                    let gate = gate.clone();
                    async move {
                        if i > 0 {
                            gate.rx.lock().await.recv().await;
                        }
                        *gate.sent.lock().unwrap() += 1;
                        Ok::<_, actix_web::Error>(Bytes::from(event))
                    }
                },
            );
            with_headers(200, &[("content-type".into(), "text/event-stream".into())])
                .streaming(stream)
        }
        Reply::HeadersThenSilence => {
            let stream = futures_util::stream::pending::<Result<Bytes, actix_web::Error>>();
            with_headers(200, &[("content-type".into(), "text/event-stream".into())])
                .streaming(stream)
        }
        Reply::Delay(pause) => {
            tokio::time::sleep(pause).await;
            HttpResponse::Ok().body("late")
        }
    }
}

fn with_headers(status: u16, headers: &[(String, String)]) -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    for (name, value) in headers {
        builder.append_header((
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        ));
    }
    builder
}

/// Builds settings and starts the sluice binary with them.
#[derive(Clone)]
pub struct SluiceBuilder {
    routes: Vec<String>,
    extra: String,
    env: Vec<(String, String)>,
    listen: String,
    state_file: Option<PathBuf>,
    /// Files written beside the settings file before the start: (relative path, content).
    files: Vec<(String, String)>,
}

pub fn sluice() -> SluiceBuilder {
    SluiceBuilder {
        routes: Vec::new(),
        extra: String::new(),
        env: Vec::new(),
        listen: "127.0.0.1:0".into(),
        state_file: None,
        files: Vec::new(),
    }
}

impl SluiceBuilder {
    /// A route with `key = value` lines, e.g. `&["credential_policy = \"server_only\""]`.
    pub fn route(mut self, prefix: &str, upstream: &str, lines: &[&str]) -> Self {
        let mut text = format!("[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\nserver_key_env = \"TEST_SERVER_KEY\"\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        self.routes.push(text);
        self
    }

    /// The same settings with every route replaced by one `prefix` → `upstream` route.
    pub fn replace_routes(mut self, prefix: &str, upstream: &str) -> Self {
        self.routes.clear();
        self.route(prefix, upstream, &[])
    }

    /// Extra TOML appended after the routes (sections like `[timeouts]`).
    pub fn toml(mut self, text: &str) -> Self {
        self.extra.push_str(text);
        self.extra.push('\n');
        self
    }

    /// A file beside the settings file (mode 600, parent directories created), e.g. a secret.
    pub fn file(mut self, name: &str, content: &str) -> Self {
        self.files.push((name.into(), content.into()));
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Persist counters to `path`, flushing every second.
    pub fn state_file(mut self, path: &Path) -> Self {
        self.state_file = Some(path.to_path_buf());
        self
    }

    /// A team's setup: access key `alice`, the server key, and the admin token.
    pub fn team(self) -> Self {
        self.access_key("alice", ACCESS_KEY)
            .server_key(SERVER_KEY)
            .env("TEST_ADMIN_TOKEN", ADMIN_TOKEN)
    }

    pub fn server_key(self, key: &str) -> Self {
        self.env("TEST_SERVER_KEY", key)
    }

    pub fn access_key(self, name: &str, key: &str) -> Self {
        let var = format!("TEST_ACCESS_{}", name.to_uppercase());
        let text = format!("[[access.keys]]\nname = \"{name}\"\nkey_env = \"{var}\"\n");
        self.toml(&text).env(&var, key)
    }

    pub fn settings_text(&self) -> String {
        format!(
            "listen = \"{}\"\nworkers = 1\nshutdown_grace_s = 5\n{}\n[admin]\ntoken_env = \"TEST_ADMIN_TOKEN\"\n[stats]\nstate_file = \"{}\"\nflush_interval_s = 1\n{}",
            self.listen,
            self.routes.join("\n"),
            self.state_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            self.extra
        )
    }

    pub fn start(self) -> Sluice {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, self.settings_text()).unwrap();
        for (name, content) in &self.files {
            write_secret(&dir.path().join(name), content);
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command.arg("--settings").arg(&path).current_dir(dir.path());
        Sluice::spawn(command, &self.env, dir)
    }
}

/// A running sluice process; killed when dropped.
pub struct Sluice {
    pub child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl Sluice {
    pub fn spawn(mut command: Command, env: &[(String, String)], dir: tempfile::TempDir) -> Sluice {
        command
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("SLUICE_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("sluice binary starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("addr=").nth(1) {
                    if let (Some(sender), Ok(addr)) = (&tx, addr.trim().parse::<SocketAddr>()) {
                        let _ = sender.send(addr);
                        tx = None;
                    }
                }
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(200));
                panic!("sluice did not start:\n{}", logs.lock().unwrap());
            }
        };
        Sluice {
            child,
            addr,
            logs,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until the logs contain `needle` (or panics after `timeout`).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.logs().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("log line {needle:?} did not appear:\n{}", self.logs());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A /proc/<pid>/status figure in kB (VmRSS, VmHWM, …).
    pub fn memory_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves on a thread of its own with a current-thread tokio runtime: `serve` gets a listener
/// on 127.0.0.1 and runs until it returns; the runtime is then dropped, and with it every
/// connection task and its socket. Returns the listener's address.
pub fn serve_on_own_thread<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener).await;
        });
    });
    rx.recv().unwrap()
}

/// An awc client for tests: no default headers, no timeout of its own.
pub fn client() -> awc::Client {
    awc::Client::builder()
        .no_default_headers()
        .disable_timeout()
        .disable_redirects()
        .finish()
}

/// A raw HTTP/1.1 exchange, for requests an HTTP client would not send. Reads until the server
/// closes, or until `timeout`.
pub fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// POSTs two chunks of 600 bytes, chunked, to `/anthropic/v1/messages` (raw: awc would not
/// send them this way) and returns the answer.
pub fn post_1200_bytes_chunked(addr: SocketAddr) -> String {
    let chunk = "x".repeat(600);
    let request = format!(
        "POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    raw_exchange(addr, request.as_bytes(), Duration::from_secs(5))
}

/// Runs `sluice check --settings <file with text>` and returns (exit code, stdout+stderr).
pub fn check(text: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("check")
        .arg("--settings")
        .arg(&path)
        .env_remove("ANTHROPIC_API_KEY");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// Writes `content` to `path` readable by its owner only, creating parent directories.
pub fn write_secret(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// GET `/stats` (with `query`, e.g. `?since=5m`) as JSON, with the admin token when given.
pub async fn stats(sluice: &Sluice, query: &str, token: Option<&str>) -> serde_json::Value {
    let mut request = client().get(sluice.url(&format!("/stats{query}")));
    if let Some(token) = token {
        request = request.insert_header(("authorization", format!("Bearer {token}")));
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&response.body().limit(16 << 20).await.unwrap()).unwrap()
}

/// Polls `/stats` until `totals.requests` reaches `n` (records arrive asynchronously).
pub async fn stats_after(sluice: &Sluice, n: u64, token: Option<&str>) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = stats(sluice, "", token).await;
        if body["totals"]["requests"].as_u64() >= Some(n) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// sha256-based fingerprint as docs/clients.md defines it: first 12 hex digits.
pub fn fingerprint(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(secret.as_bytes())[..6])
}

pub mod known_rows;
pub mod otlp;
pub mod pg;
pub mod raw_h2;
pub mod test_ca;
pub mod tls_upstream;
