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
//! Run: `cargo run --release --example bare_proxy -- --stack actix --listen 127.0.0.1:9100
//! --upstream http://127.0.0.1:9001`

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
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let upstream = args.upstream.trim_end_matches('/').to_string();
    match args.stack {
        Stack::Actix => actix_rt::System::new().block_on(actix(args.listen, upstream)),
        Stack::ActixHyper => actix_rt::System::new().block_on(actix_hyper(args.listen, upstream)),
        Stack::Hyper => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(hyper(args.listen, upstream)),
    }
}

async fn actix(listen: SocketAddr, upstream: String) -> std::io::Result<()> {
    HttpServer::new(move || {
        App::new()
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
) -> actix_web::Result<HttpResponse> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let answer = client
        .request_from(format!("{}{path}", upstream.as_str()), request.head())
        .no_decompress()
        .send_stream(body)
        .await
        .map_err(actix_web::error::ErrorBadGateway)?;
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
    Ok(match length {
        Some(length) => response.body(SizedStream::new(length, answer)),
        None => response.streaming(answer),
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
