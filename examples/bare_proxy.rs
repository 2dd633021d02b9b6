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
//! leave out: its row in the store, made and kept by sluice's own pieces (the aggregator's
//! `StoreSink` turns records into rows, sluice's store writer keeps them in an SQLite file at
//! PATH, with the same schema, batching, pacing and thread priority). Each answered request makes
//! a record like the one sluice makes for the bench's request; a worker's records are handed
//! over every 5 ms (as sluice's aggregator drains), and the worker asks for sluice's short time
//! slice. Nothing else of sluice: no routing, credentials, readers, aggregator or log line. It
//! measures the floor under any proxy on this stack that keeps SPEC's store.
//!
//! `--meter` (with `--store`) adds the rest of what SPEC asks of every request: the request's
//! model and the answer's usage read with sluice's own readers as the bytes pass, the cost from
//! sluice's built-in price table, and sluice's usage line (its `UsageLog` sink, written as the
//! aggregator writes it: a hand-over's lines in one write). Still no routing, credentials,
//! quotas, `/stats` or `/metrics`.
//!
//! Both are made for the bench's request and nothing else: every answer is read as JSON and its
//! record says status 200, outcome `completed`. With `--store` a record is made once the
//! upstream's headers arrived; with `--meter`, once the answer's body ended. A request the
//! upstream never answered (502) or whose answer broke off gets none (sluice records those too).
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
        rows.add_unread();
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

/// `--store`: one row per request through sluice's store sink and writer; `--meter`: what SPEC
/// asks of each request besides (its model and usage read, priced, logged).
mod rows {
    use std::cell::RefCell;
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant, SystemTime};

    use actix_web::HttpRequest;
    use bytes::Bytes;
    use futures_util::Stream;
    use sluice::credentials::CredentialSource;
    use sluice::metrics::usage_log::UsageLog;
    use sluice::metrics::{Finished, RequestRecord, Sink};
    use sluice::pricing::PriceTable;
    use sluice::protocol::{RequestModel, UsageParser};
    use sluice::store::{self, StoreHandle, StoreOptions, StoreSink, Target};
    use sluice::usage::{AnswerFormat, Usage};

    /// How often a worker hands its records over (sluice's aggregator drains as often).
    const HAND_OVER_EVERY: Duration = Duration::from_millis(5);
    /// The instance name in every row (sluice's is `<host>/<listen>/<pid>`).
    const INSTANCE: &str = "vm/127.0.0.1:9100/14610";

    #[derive(Clone)]
    pub struct Rows {
        store: StoreHandle,
        /// `--meter`: sluice's built-in prices.
        prices: Option<Arc<PriceTable>>,
    }

    /// One worker's side: what every request's record starts from, and the records since the
    /// last hand-over.
    pub struct WorkerRows(Rc<Worker>);

    struct Worker {
        /// The record every request gets, as sluice makes it for the bench's request.
        template: RequestRecord,
        prices: Option<Arc<PriceTable>>,
        waiting: RefCell<Vec<Finished>>,
    }

    impl Rows {
        pub fn open(path: PathBuf, meter: bool) -> std::io::Result<Self> {
            let store = store::open(StoreOptions::new(Target::Sqlite(path)))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let prices = if meter {
                sluice::logging::init(sluice::logging::LogFormat::Text);
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
            Ok(Self { store, prices })
        }

        /// This worker's own collector, handed over on a timer of the worker's runtime to a
        /// store sink (and with `--meter` the usage log) of its own, as the aggregator does.
        pub fn for_this_worker(&self) -> WorkerRows {
            sluice::service::short_time_slice();
            let worker = Rc::new(Worker {
                template: RequestRecord {
                    route: "/anthropic".into(),
                    method: "POST".into(),
                    path: "/v1/messages".into(),
                    status: 200,
                    model: Some("claude-sonnet-4-5-20250929".into()),
                    source: Some(CredentialSource::ClientApiKey),
                    credential: Some("client_api_key:5954b0e12628".into()),
                    provider: Some("anthropic"),
                    usage: Usage {
                        input_tokens: 12,
                        output_tokens: 11,
                        ..Usage::default()
                    },
                    ttfb: Some(Duration::from_millis(1)),
                    total: Duration::from_millis(1),
                    overhead: Some(Duration::ZERO),
                    ..RequestRecord::default()
                },
                prices: self.prices.clone(),
                waiting: RefCell::new(Vec::new()),
            });
            let mut sink = StoreSink::new(self.store.clone(), INSTANCE.into());
            let log = worker.prices.is_some();
            let collected = Rc::clone(&worker);
            actix_rt::spawn(async move {
                let mut every = actix_rt::time::interval(HAND_OVER_EVERY);
                let mut batch = Vec::new();
                loop {
                    every.tick().await;
                    std::mem::swap(&mut batch, &mut *collected.waiting.borrow_mut());
                    sluice::logging::batched(|| {
                        if log {
                            UsageLog.accept(&batch);
                        }
                        sink.accept(&batch);
                    });
                    batch.clear();
                }
            });
            WorkerRows(worker)
        }
    }

    impl WorkerRows {
        /// `--store` alone: the bench's record as it is, its usage not read.
        pub fn add_unread(&self) {
            let mut record = self.0.template.clone();
            record.finished_at = SystemTime::now();
            self.0.waiting.borrow_mut().push(Finished {
                record,
                cost: Some(0.000_201),
            });
        }

        /// `--meter`: this request's readers (`None` without `--meter`).
        pub fn metering(&self, request: &HttpRequest) -> Option<Metering> {
            self.0.prices.as_ref()?;
            Some(Metering(Rc::new(RefCell::new(Metered {
                started: Instant::now(),
                first_byte: None,
                model: RequestModel::new(request.headers(), None),
                usage: UsageParser::new(AnswerFormat::Json),
                worker: Rc::clone(&self.0),
            }))))
        }
    }

    /// One request's readers, shared by its request and answer bodies.
    #[derive(Clone)]
    pub struct Metering(Rc<RefCell<Metered>>);

    struct Metered {
        started: Instant,
        first_byte: Option<Instant>,
        model: Option<RequestModel>,
        usage: UsageParser,
        worker: Rc<Worker>,
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
        /// The answer ended: its record, priced, for the worker's next hand-over.
        fn finish(&mut self) {
            let answer = self.usage.finish();
            let request_model = self.model.as_ref().and_then(RequestModel::model);
            let model = answer.model.clone().or(request_model.map(str::to_string));
            let prices = self.worker.prices.as_ref().expect("metering has prices");
            let cost = prices.cost_usd(model.as_deref(), &answer.usage);
            let record = RequestRecord {
                finished_at: SystemTime::now(),
                model,
                request_model: request_model.map(str::to_string),
                usage: answer.usage,
                ttfb: self.first_byte.map(|at| at - self.started),
                total: self.started.elapsed(),
                ..self.worker.template.clone()
            };
            self.worker
                .waiting
                .borrow_mut()
                .push(Finished { record, cost });
        }
    }
}
