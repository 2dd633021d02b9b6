//! The least a pass-through proxy on a given HTTP stack does, for `bench/stack.sh`: every request
//! forwarded to one upstream with its method, path, headers and body streamed, the answer's
//! status, headers and body streamed back. No routes, credentials, metering, logging or store.
//! It measures what the stack itself costs per request, the floor under sluice's own work.
//!
//! `--stack actix` is the stack sluice is built on (actix-web server, awc client, one worker);
//! `--stack hyper` is hyper's server and hyper-util's pooled client on one thread;
//! `--stack actix-hyper` is actix-web's server with hyper-util's client (the request body, small
//! here, is read whole first: actix's body stream cannot move to hyper's client tasks).
//!
//! `--store PATH` (actix only) adds the one thing SPEC asks of every request that no design can
//! leave out: its row in the store, kept by sluice's own store writer (same schema, batching,
//! pacing and thread priority) in an SQLite file at PATH. Each answered request hands the writer
//! a row like the one sluice writes for the bench's request, collected per worker and handed over
//! every 5 ms (as sluice's aggregator drains); the worker asks for sluice's short time slice.
//! Nothing else of sluice: no routing, credentials, readers, aggregator or log line. It measures
//! the floor under any proxy on this stack that keeps SPEC's store.
//!
//! `--meter` (with `--store`) adds the rest of what SPEC asks of every request: the request's
//! model and the answer's usage read with sluice's own readers as the bytes pass, the cost from
//! sluice's built-in price table, and one usage line per request on stderr with sluice's fields
//! (written as sluice's aggregator writes them: a worker's lines every 5 ms in one write). Still
//! no routing, credentials, quotas, `/stats` or `/metrics`.
//!
//! Both are made for the bench's request and nothing else: every answer is read as JSON and its
//! row says status 200, outcome `completed`. With `--store` a row is kept once the upstream's
//! headers arrived; with `--meter`, once the answer's body ended. A request the upstream never
//! answered (502) or whose answer broke off gets no row (sluice writes one for those too).
//!
//! Run: `cargo run --release --example bare_proxy -- --stack actix --listen 127.0.0.1:9100
//! --upstream http://127.0.0.1:9001 [--store /tmp/bare.db]`

use std::net::SocketAddr;

use actix_web::body::SizedStream;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Stack {
    Actix,
    Hyper,
    ActixHyper,
}

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum)]
    stack: Stack,
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream's origin, e.g. http://127.0.0.1:9001 (the request's path is appended).
    #[arg(long)]
    upstream: String,
    /// Keep a row per request in this SQLite file, written by sluice's store writer (actix only).
    #[arg(long)]
    store: Option<std::path::PathBuf>,
    /// With `--store`: read each request's model and answer's usage, price it, log a usage line.
    #[arg(long, requires = "store")]
    meter: bool,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let upstream = args.upstream.trim_end_matches('/').to_string();
    match args.stack {
        Stack::Actix => {
            let meter = args.meter;
            let rows = args
                .store
                .map(|path| rows::Rows::open(path, meter))
                .transpose()?;
            actix_rt::System::new().block_on(actix(args.listen, upstream, rows))
        }
        Stack::ActixHyper => actix_rt::System::new().block_on(actix_hyper(args.listen, upstream)),
        Stack::Hyper => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(hyper(args.listen, upstream)),
    }
}

async fn actix(
    listen: SocketAddr,
    upstream: String,
    rows: Option<rows::Rows>,
) -> std::io::Result<()> {
    HttpServer::new(move || {
        let rows = rows.as_ref().map(rows::Rows::for_this_worker);
        App::new()
            .app_data(web::Data::new(rows))
            .app_data(web::Data::new(awc::Client::default()))
            .app_data(web::Data::new(upstream.clone()))
            .default_service(web::to(actix_forward))
    })
    .workers(1)
    .bind(listen)?
    .run()
    .await
}

async fn actix_forward(
    request: HttpRequest,
    body: web::Payload,
    client: web::Data<awc::Client>,
    upstream: web::Data<String>,
    rows: web::Data<Option<rows::WorkerRows>>,
) -> actix_web::Result<HttpResponse> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let rows = rows.as_ref().as_ref();
    let metering = rows.and_then(|rows| rows.metering(&request));
    let send = client
        .request_from(format!("{}{path}", upstream.as_str()), request.head())
        .no_decompress();
    let answer = match &metering {
        Some(metering) => send.send_stream(metering.read_request(body)).await,
        None => send.send_stream(body).await,
    }
    .map_err(actix_web::error::ErrorBadGateway)?;
    if let (Some(rows), None) = (rows, &metering) {
        rows.add(rows.template().clone());
    }
    let mut response = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if name != "connection" && name != "content-length" && name != "transfer-encoding" {
            response.append_header((name.clone(), value.clone()));
        }
    }
    let length = answer
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    Ok(match (length, metering) {
        (Some(length), Some(metering)) => {
            response.body(SizedStream::new(length, metering.read_answer(answer)))
        }
        (None, Some(metering)) => response.streaming(metering.read_answer(answer)),
        (Some(length), None) => response.body(SizedStream::new(length, answer)),
        (None, None) => response.streaming(answer),
    })
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

fn hyper_client() -> HyperClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

async fn actix_hyper(listen: SocketAddr, upstream: String) -> std::io::Result<()> {
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(hyper_client()))
            .app_data(web::Data::new(upstream.clone()))
            .default_service(web::to(actix_hyper_forward))
    })
    .workers(1)
    .bind(listen)?
    .run()
    .await
}

async fn actix_hyper_forward(
    request: HttpRequest,
    body: web::Bytes,
    client: web::Data<HyperClient>,
    upstream: web::Data<String>,
) -> actix_web::Result<HttpResponse> {
    use http_body_util::BodyExt;
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut forwarded = hyper::Request::builder()
        .method(request.method().as_str())
        .uri(format!("{}{path}", upstream.as_str()));
    for (name, value) in request.headers() {
        if name != "host" && name != "connection" {
            forwarded = forwarded.header(name.as_str(), value.as_bytes());
        }
    }
    let forwarded = forwarded
        .body(http_body_util::Full::new(body))
        .map_err(actix_web::error::ErrorBadRequest)?;
    let answer = client
        .request(forwarded)
        .await
        .map_err(actix_web::error::ErrorBadGateway)?;
    let mut response = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(answer.status().as_u16())
            .map_err(actix_web::error::ErrorBadGateway)?,
    );
    for (name, value) in answer.headers() {
        if name != "connection" && name != "content-length" && name != "transfer-encoding" {
            response.append_header((name.as_str(), value.as_bytes()));
        }
    }
    let length = answer
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let stream = answer.into_body().into_data_stream();
    Ok(match length {
        Some(length) => response.body(SizedStream::new(length, stream)),
        None => response.streaming(stream),
    })
}

async fn hyper(listen: SocketAddr, upstream: String) -> std::io::Result<()> {
    use hyper::body::Incoming;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let forward =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
                    let uri = format!("{upstream}{path}").parse::<hyper::Uri>();
                    let client = client.clone();
                    async move {
                        *request.uri_mut() = uri.map_err(std::io::Error::other)?;
                        request.headers_mut().remove(hyper::header::HOST);
                        client.request(request).await.map_err(std::io::Error::other)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), forward)
                .await;
        });
    }
}

/// `--store`: one row per request through sluice's store writer; `--meter`: what SPEC asks of
/// each request besides (its model and usage read, priced, logged).
mod rows {
    use std::cell::RefCell;
    use std::fmt::Write as _;
    use std::io::Write as _;
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant, SystemTime};

    use actix_web::HttpRequest;
    use bytes::Bytes;
    use futures_util::Stream;
    use sluice::pricing::PriceTable;
    use sluice::protocol::{RequestModel, UsageParser};
    use sluice::store::{self, StoreHandle, StoreOptions, StoreRow, Target, Text};
    use sluice::usage::AnswerFormat;

    /// How often a worker hands its rows to the writer (sluice's aggregator drains as often).
    const HAND_OVER_EVERY: Duration = Duration::from_millis(5);

    #[derive(Clone)]
    pub struct Rows {
        store: StoreHandle,
        /// The row every request gets, as sluice writes it for the bench's request (texts
        /// shared, as sluice shares a run's texts).
        template: StoreRow,
        /// `--meter`: sluice's built-in prices.
        prices: Option<Arc<PriceTable>>,
    }

    /// One worker's rows and log lines since its last hand-over.
    pub struct WorkerRows {
        template: StoreRow,
        prices: Option<Arc<PriceTable>>,
        waiting: Rc<RefCell<Waiting>>,
    }

    #[derive(Default)]
    struct Waiting {
        rows: Vec<StoreRow>,
        lines: String,
    }

    impl Rows {
        pub fn open(path: PathBuf, meter: bool) -> std::io::Result<Self> {
            let store = store::open(StoreOptions::new(Target::Sqlite(path)))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let text = |s: &str| Text::from(s);
            let template = StoreRow {
                instance: text("vm/127.0.0.1:9100/14610"),
                route: text("/anthropic"),
                method: text("POST"),
                status: 200,
                outcome: text("completed"),
                model: text("claude-sonnet-4-5-20250929"),
                source: text("client_api_key"),
                credential: text("client_api_key:5954b0e12628"),
                provider: text("anthropic"),
                input_tokens: 12,
                output_tokens: 11,
                cost_usd: 0.000_201,
                ttfb_ms: Some(1),
                total_ms: 1,
                overhead_ms: Some(0),
                ..StoreRow::default()
            };
            let prices = if meter {
                // The built-in prices: sluice's defaults, as `sluice` with no settings file has.
                let env = sluice::settings::EnvSource::Fixed(Default::default());
                let toml =
                    "[[routes]]\nprefix = \"/anthropic\"\nupstream = \"http://127.0.0.1:1\"\n";
                let settings = sluice::settings::Settings::from_toml(toml, "defaults", &env)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Some(Arc::new(PriceTable::new(settings.pricing)))
            } else {
                None
            };
            Ok(Self {
                store,
                template,
                prices,
            })
        }

        /// This worker's own collector, handed over on a timer of the worker's runtime.
        pub fn for_this_worker(&self) -> WorkerRows {
            sluice::service::short_time_slice();
            let waiting = Rc::new(RefCell::new(Waiting::default()));
            let worker = WorkerRows {
                template: self.template.clone(),
                prices: self.prices.clone(),
                waiting: Rc::clone(&waiting),
            };
            let store = self.store.clone();
            actix_rt::spawn(async move {
                let mut every = actix_rt::time::interval(HAND_OVER_EVERY);
                loop {
                    every.tick().await;
                    let mut waiting = waiting.borrow_mut();
                    store.submit(std::mem::take(&mut waiting.rows));
                    if !waiting.lines.is_empty() {
                        let _ = std::io::stderr().lock().write_all(waiting.lines.as_bytes());
                        waiting.lines.clear();
                    }
                }
            });
            worker
        }
    }

    impl WorkerRows {
        pub fn template(&self) -> &StoreRow {
            &self.template
        }

        pub fn add(&self, mut row: StoreRow) {
            row.finished_ms = store::unix_ms(SystemTime::now());
            self.waiting.borrow_mut().rows.push(row);
        }

        /// `--meter`: this request's readers (`None` without `--meter`).
        pub fn metering(&self, request: &HttpRequest) -> Option<Metering> {
            let prices = self.prices.clone()?;
            Some(Metering(Rc::new(RefCell::new(Metered {
                started: Instant::now(),
                first_byte: None,
                method: request.method().to_string(),
                path: request.path().to_string(),
                model: RequestModel::new(request.headers(), None),
                usage: UsageParser::new(AnswerFormat::Json),
                template: self.template.clone(),
                prices,
                waiting: Rc::clone(&self.waiting),
            }))))
        }
    }

    /// One request's readers, shared by its request and answer bodies.
    #[derive(Clone)]
    pub struct Metering(Rc<RefCell<Metered>>);

    struct Metered {
        started: Instant,
        first_byte: Option<Instant>,
        method: String,
        path: String,
        model: Option<RequestModel>,
        usage: UsageParser,
        template: StoreRow,
        prices: Arc<PriceTable>,
        waiting: Rc<RefCell<Waiting>>,
    }

    impl Metering {
        pub fn read_request<S, E>(&self, body: S) -> Read<S>
        where
            S: Stream<Item = Result<Bytes, E>> + Unpin,
        {
            Read {
                inner: body,
                metering: self.clone(),
                answer: false,
                done: false,
            }
        }

        pub fn read_answer<S, E>(self, body: S) -> Read<S>
        where
            S: Stream<Item = Result<Bytes, E>> + Unpin,
        {
            Read {
                inner: body,
                metering: self,
                answer: true,
                done: false,
            }
        }
    }

    /// A body passed through unchanged, its bytes read on the way.
    pub struct Read<S> {
        inner: S,
        metering: Metering,
        answer: bool,
        done: bool,
    }

    impl<S, E> Stream for Read<S>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        type Item = Result<Bytes, E>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let polled = Pin::new(&mut self.inner).poll_next(cx);
            let mut metered = self.metering.0.borrow_mut();
            match &polled {
                Poll::Ready(Some(Ok(chunk))) if self.answer => {
                    metered.first_byte.get_or_insert_with(Instant::now);
                    metered.usage.feed(chunk);
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(model) = metered.model.as_mut() {
                        model.feed(chunk);
                    }
                }
                Poll::Ready(None) if self.answer && !self.done => {
                    metered.finish();
                    drop(metered);
                    self.done = true;
                }
                _ => {}
            }
            polled
        }
    }

    impl Metered {
        /// The answer ended: its row and its usage line.
        fn finish(&mut self) {
            let answer = self.usage.finish();
            let model = answer
                .model
                .as_deref()
                .or_else(|| self.model.as_ref()?.model());
            let cost = self.prices.cost_usd(model, &answer.usage).unwrap_or(0.0);
            let total = self.started.elapsed();
            let ttfb = self.first_byte.map(|at| at - self.started);
            let usage = &answer.usage;
            let mut row = self.template.clone();
            row.finished_ms = store::unix_ms(SystemTime::now());
            if row.model.as_str() != model.unwrap_or_default() {
                row.model = Text::from(model.unwrap_or_default());
            }
            row.input_tokens = usage.input_tokens;
            row.output_tokens = usage.output_tokens;
            row.cache_read_tokens = usage.cache_read_input_tokens;
            row.cost_usd = cost;
            row.total_ms = total.as_millis() as u64;
            row.ttfb_ms = ttfb.map(|t| t.as_millis() as u64);
            let mut waiting = self.waiting.borrow_mut();
            let line = &mut waiting.lines;
            let _ = writeln!(
                line,
                "{}  INFO sluice::usage: request finished route=/anthropic provider=anthropic \
                 client= method={} path={} status=200 model={} source={} credential={} \
                 caller= session= input_tokens={} output_tokens={} \
                 cache_creation_input_tokens={} cache_read_input_tokens={} \
                 web_search_requests=0 reasoning_output_tokens=0 usage_missing=false \
                 cost_usd={cost} ttfb_ms={:.3} total_ms={:.3} overhead_ms=0 \
                 outcome=completed estimated=false",
                jiff::Timestamp::now(),
                self.method,
                self.path,
                row.model.as_str(),
                row.source.as_str(),
                row.credential.as_str(),
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_creation_input_tokens,
                usage.cache_read_input_tokens,
                ttfb.unwrap_or_default().as_secs_f64() * 1e3,
                total.as_secs_f64() * 1e3,
            );
            waiting.rows.push(row);
        }
    }
}
