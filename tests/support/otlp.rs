//! An OTLP/HTTP receiver for tests: decodes what sluice posts to `/v1/metrics` and `/v1/traces`
//! with the same generated protobuf types, and answers as told (accept, a status, never).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Metric};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// How the receiver answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Accept,
    /// This status, with `retry-after` seconds when given.
    Status(u16, Option<u64>),
    /// Reads the request, then never answers.
    Hang,
}

#[derive(Default)]
struct Received {
    /// Answers to give first, in order; `Accept` once they run out (unless `always`).
    script: VecDeque<Answer>,
    always: Option<Answer>,
    metrics: Vec<ExportMetricsServiceRequest>,
    traces: Vec<ExportTraceServiceRequest>,
    /// Each request's headers, names lower-cased.
    headers: Vec<Vec<(String, String)>>,
    hits: usize,
}

#[derive(Clone)]
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl OtlpReceiver {
    /// A receiver answering `answer` to every request.
    pub fn start(answer: Answer) -> Self {
        Self::scripted(Vec::new(), answer)
    }

    /// A receiver answering `first` in order, then `then` to the rest.
    pub fn scripted(first: Vec<Answer>, then: Answer) -> Self {
        let received = Arc::new(Mutex::new(Received {
            script: first.into(),
            always: Some(then),
            ..Received::default()
        }));
        let shared = received.clone();
        let addr = super::serve_on_own_thread(move |listener| async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, shared.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, received }
    }

    /// An address where nothing listens: connections are refused.
    pub fn refusing() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.received.lock().unwrap().hits
    }

    /// The newest metrics export accepted.
    pub fn latest_metrics(&self) -> Option<ExportMetricsServiceRequest> {
        self.received.lock().unwrap().metrics.last().cloned()
    }

    /// Every span accepted, in arrival order.
    pub fn spans(&self) -> Vec<Span> {
        let received = self.received.lock().unwrap();
        received
            .traces
            .iter()
            .flat_map(|t| &t.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    pub fn trace_requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.received.lock().unwrap().traces.clone()
    }

    pub fn headers(&self) -> Vec<Vec<(String, String)>> {
        self.received.lock().unwrap().headers.clone()
    }
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    received: Arc<Mutex<Received>>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let answer = {
        let mut state = received.lock().unwrap();
        state.hits += 1;
        state.headers.push(headers);
        let answer = state
            .script
            .pop_front()
            .or_else(|| state.always.clone())
            .unwrap_or(Answer::Accept);
        if answer == Answer::Accept {
            let body = body.unwrap_or_default();
            match path.as_str() {
                "/v1/metrics" => state
                    .metrics
                    .push(ExportMetricsServiceRequest::decode(body).expect("metrics decode")),
                "/v1/traces" => state
                    .traces
                    .push(ExportTraceServiceRequest::decode(body).expect("traces decode")),
                other => panic!("unexpected OTLP path {other}"),
            }
        }
        answer
    };
    let response = match answer {
        Answer::Accept => hyper::Response::builder()
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::new())),
        Answer::Status(status, retry_after) => {
            let mut builder = hyper::Response::builder().status(status);
            if let Some(seconds) = retry_after {
                builder = builder.header("retry-after", seconds.to_string());
            }
            builder.body(Full::new(Bytes::from_static(b"not now")))
        }
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    Ok(response.unwrap())
}

/// A metric of an export request by name.
pub fn metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
}

/// A string, int or double attribute's value as text.
pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.clone()?;
    Some(match value.value? {
        Value::StringValue(s) => s,
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// A sum metric's total over its points.
pub fn sum_total(metric: &Metric) -> f64 {
    let Some(metric::Data::Sum(sum)) = &metric.data else {
        panic!("{} is not a sum", metric.name);
    };
    sum.data_points
        .iter()
        .map(|p| match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => 0.0,
        })
        .sum()
}

/// A histogram's (count, sum) over the points whose attribute `key` is `value` (all points when
/// `key` is empty).
pub fn histogram_total(metric: &Metric, key: &str, value: &str) -> (u64, f64) {
    let Some(metric::Data::Histogram(histogram)) = &metric.data else {
        panic!("{} is not a histogram", metric.name);
    };
    histogram
        .data_points
        .iter()
        .filter(|p| key.is_empty() || attribute(&p.attributes, key).as_deref() == Some(value))
        .fold((0, 0.0), |(count, sum), p| {
            (count + p.count, sum + p.sum.unwrap_or(0.0))
        })
}
