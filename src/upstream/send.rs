//! One exchange with the upstream, whichever client carries it: the request (method, URL,
//! headers, the client's body streamed as it arrives) goes out; the answer's status, headers and
//! byte stream come back. HTTP/1.1 goes through the worker's awc client; an `https://` route
//! that offers HTTP/2 goes through hyper once the upstream has picked it (see `h2`).

use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use awc::error::{ConnectError, PayloadError, SendRequestError};
use futures_util::Stream;
use hyper::body::Body as _;

use super::framing::RequestBody;
use super::h2::{feed, H2Answer, H2Route, H2Stream, Pump};
use crate::error::Error;

/// A worker's way to one route's upstream: its awc client, and for an `https://` route that
/// offers HTTP/2 the hyper client that multiplexes requests once the upstream picks h2.
#[derive(Clone)]
pub struct RouteClient {
    pub(super) awc: awc::Client,
    pub(super) h2: Option<Rc<H2Route>>,
    pub(super) connect: Duration,
}

impl RouteClient {
    /// A WebSocket upgrade to `url` on this route's client (HTTP/1.1, its TLS trust). At most
    /// `max_frame` bytes per frame are accepted from the upstream.
    pub fn websocket(&self, url: &str, max_frame: usize) -> awc::ws::WebsocketsRequest {
        self.awc.ws(url).max_frame_size(max_frame)
    }
}

/// A request ready to go upstream, body still to come.
pub struct UpstreamRequest {
    pub client: RouteClient,
    pub method: Method,
    pub url: String,
    /// Already rewritten: no hop-by-hop headers, no `host`, credentials decided.
    pub headers: HeaderMap,
}

impl UpstreamRequest {
    /// Sends the request, streaming `body` (framed as the client framed it), and resolves with
    /// the answer's head. A failure is the error the client is told.
    pub async fn send<S>(self, framing: RequestBody, body: S) -> Result<Answer, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + 'static,
    {
        let UpstreamRequest {
            client,
            method,
            url,
            headers,
        } = self;
        if let Some(h2) = &client.h2 {
            if h2.speaks_h2().await? {
                return h2
                    .send(method, &url, &headers, framing, body)
                    .await
                    .map(Answer::H2);
            }
        }
        let mut request = client
            .awc
            .request(method, url)
            // Bytes pass as they are: no `accept-encoding` of our own, no decompression.
            .no_decompress();
        *request.headers_mut() = headers;
        let sent = match framing {
            RequestBody::Sized(length) => request.send_body(SizedStream::new(length, body)).await,
            RequestBody::Chunked => request.send_body(BodyStream::new(body)).await,
            // `send()` would declare `content-length: 0`; a request without a body has none.
            RequestBody::None => request.send_body(actix_web::body::None::new()).await,
        };
        sent.map(Answer::Awc)
            .map_err(|err| awc_failure(err, client.connect))
    }
}

/// The upstream's answer: its head, and its body to stream back.
pub enum Answer {
    Awc(awc::ClientResponse),
    H2(H2Answer),
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Awc(response) => response.status(),
            Answer::H2(answer) => answer.status,
        }
    }

    pub fn headers(&self) -> &HeaderMap {
        match self {
            Answer::Awc(response) => response.headers(),
            Answer::H2(answer) => &answer.headers,
        }
    }

    pub fn into_body(self) -> AnswerBody {
        match self {
            Answer::Awc(response) => AnswerBody::Awc(response),
            Answer::H2(H2Answer {
                body, pump, stream, ..
            }) => AnswerBody::H2 {
                body,
                pump,
                _stream: stream,
            },
        }
    }
}

/// The answer's bytes as they arrive, untouched.
pub enum AnswerBody {
    Awc(awc::ClientResponse),
    H2 {
        body: hyper::body::Incoming,
        pump: Option<Pump>,
        /// Counted on its connection until the answer is read or dropped.
        _stream: H2Stream,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AnswerBodyError {
    #[error(transparent)]
    Awc(#[from] PayloadError),
    #[error(transparent)]
    H2(#[from] hyper::Error),
}

impl Stream for AnswerBody {
    type Item = Result<Bytes, AnswerBodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            AnswerBody::Awc(response) => Pin::new(response)
                .poll_next(cx)
                .map(|item| item.map(|chunk| chunk.map_err(AnswerBodyError::from))),
            AnswerBody::H2 { body, pump, .. } => {
                // The request body may still be on its way while the answer comes.
                feed(pump, cx);
                loop {
                    match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                        None => return Poll::Ready(None),
                        Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                        // Trailers are not part of the answer's bytes; empty frames carry none.
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                            _ => continue,
                        },
                    }
                }
            }
        }
    }
}

fn awc_failure(err: SendRequestError, connect: Duration) -> Error {
    match err {
        SendRequestError::Connect(ConnectError::Timeout) => {
            Error::ConnectTimeout(connect.as_millis())
        }
        SendRequestError::Connect(err) => Error::UpstreamUnreachable(err.to_string()),
        SendRequestError::Timeout => Error::UpstreamTimeout(0),
        // The body stream's own error (from the request body tap) comes back boxed.
        SendRequestError::Body(err) => match err.downcast::<Error>() {
            Ok(err) => *err,
            Err(err) => Error::ClientBody(err.to_string()),
        },
        other => Error::UpstreamBroken(other.to_string()),
    }
}
