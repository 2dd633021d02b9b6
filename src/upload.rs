//! The client's upload on its way upstream, and who is to blame when it goes wrong. The upstream
//! client (awc, or the HTTP/2 pump, both on the request's own task) reads it as a stream
//! ([`Upload`]); the request handler checks it at every poll ([`UploadWatch`]), so that
//! - a broken upload (bad chunked framing, a client that left mid-body) is answered `400
//!   client_body` in the very poll that finds it: actix-http closes such a connection right
//!   after that poll, and a handler still waiting for the upstream would never be answered;
//! - a stalled upload (nothing arrives for `idle_ms` while sluice waits for the client) is
//!   `408 client_timeout`, the client's fault, not an upstream failure.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::dev;
use actix_web::error::PayloadError;
use actix_web::web::{self, Bytes};
use futures_util::{Stream, StreamExt as _};
use tokio::time::Sleep;

use crate::error::Error;
use crate::protocol::Protocol;

struct Shared {
    payload: dev::Payload,
    /// The client has sent all of its body.
    complete: bool,
    /// Nothing of the body is waiting to be sent on: the upload waits for the client.
    waiting_on_client: bool,
    /// When sluice last saw the client make progress, or last had its bytes waiting for the
    /// upstream to take (then the wait is not the client's).
    last_progress: Instant,
}

/// The request body as awc streams it upstream.
pub struct Upload(Rc<RefCell<Shared>>);

/// The handler's view of the same body.
pub struct UploadWatch {
    shared: Rc<RefCell<Shared>>,
    idle: Duration,
    stall_timer: Option<Pin<Box<Sleep>>>,
}

/// How the upload stands; readable after the body went to awc.
#[derive(Clone)]
pub struct UploadProgress(Rc<RefCell<Shared>>);

/// Splits the request body into the stream for awc and the watch for the handler. `has_body`
/// is false for a request that declares none (it is complete from the start).
pub fn watch(payload: web::Payload, has_body: bool, idle: Duration) -> (Upload, UploadWatch) {
    let shared = Rc::new(RefCell::new(Shared {
        payload: payload.into_inner(),
        complete: !has_body,
        waiting_on_client: false,
        last_progress: Instant::now(),
    }));
    (
        Upload(shared.clone()),
        UploadWatch {
            shared,
            idle,
            stall_timer: None,
        },
    )
}

impl Upload {
    pub fn progress(&self) -> UploadProgress {
        UploadProgress(self.0.clone())
    }
}

impl UploadProgress {
    /// The body is incomplete and none of it waits to go upstream: sluice waits for the client
    /// (not for an upstream that does not read it).
    pub fn waiting_on_client(&self) -> bool {
        let shared = self.0.borrow();
        !shared.complete && shared.waiting_on_client
    }
}

impl Stream for Upload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut shared = self.0.borrow_mut();
        let polled = Pin::new(&mut shared.payload).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                shared.last_progress = Instant::now();
                shared.waiting_on_client = false;
            }
            Poll::Ready(None) => shared.complete = true,
            Poll::Pending => shared.waiting_on_client = true,
            Poll::Ready(Some(Err(_))) => {}
        }
        polled
    }
}

/// What the client's side of an upload shows right now.
enum Seen {
    Failed(PayloadError),
    /// Bytes wait in actix's buffer for awc to take them.
    Buffered,
    /// All of it has arrived.
    Ended,
    /// Nothing new: waiting for the client.
    Waiting,
}

/// Looks at what actix-http holds for the request without consuming it: takes every buffered
/// chunk (actix bounds them) to see what lies behind, then puts them back in order. Only a
/// payload error is consumed, and the request ends on it.
fn peek(payload: &mut dev::Payload, cx: &mut Context<'_>) -> Seen {
    let dev::Payload::H1 { payload } = payload else {
        return Seen::Waiting;
    };
    let mut taken = Vec::new();
    let seen = loop {
        match Pin::new(&mut *payload).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => taken.push(chunk),
            Poll::Ready(Some(Err(err))) => break Seen::Failed(err),
            Poll::Ready(None) => break Seen::Ended,
            Poll::Pending if taken.is_empty() => break Seen::Waiting,
            Poll::Pending => break Seen::Buffered,
        }
    };
    for chunk in taken.into_iter().rev() {
        payload.unread_data(chunk);
    }
    seen
}

impl UploadWatch {
    /// The client's error, if its upload has failed or stalled; otherwise arranges to be polled
    /// again when a stall would be due.
    fn check(&mut self, cx: &mut Context<'_>) -> Option<Error> {
        let deadline = {
            let mut shared = self.shared.borrow_mut();
            if shared.complete {
                return None;
            }
            match peek(&mut shared.payload, cx) {
                Seen::Failed(err) => return Some(Error::ClientBody(err.to_string())),
                Seen::Ended => {
                    shared.complete = true;
                    return None;
                }
                Seen::Buffered => {
                    shared.last_progress = Instant::now();
                    shared.waiting_on_client = false;
                }
                Seen::Waiting => shared.waiting_on_client = true,
            }
            shared.last_progress + self.idle
        };
        if deadline <= Instant::now() {
            return Some(Error::ClientTimeout(self.idle.as_millis()));
        }
        let timer = self
            .stall_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        if timer.deadline() != deadline.into() {
            timer.as_mut().reset(deadline.into());
        }
        // Registers the wakeup; it fires at the deadline at the earliest.
        let _ = timer.as_mut().poll(cx);
        None
    }

    /// Runs `exchange` unless the upload fails or stalls first; then it is dropped (and with it
    /// the upstream request) and the client's error returned.
    pub async fn guard<T>(
        mut self,
        exchange: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut exchange = std::pin::pin!(exchange);
        std::future::poll_fn(move |cx| {
            if let Some(err) = self.check(cx) {
                return Poll::Ready(Err(err));
            }
            exchange.as_mut().poll(cx)
        })
        .await
    }
}

/// The answer to a broken upload: its error, then the connection held open until actix-http
/// closes it (it does at once, having seen the broken framing). Were the answer to end, actix
/// would write its own bare `400` after it for the same request.
pub fn broken_upload_answer(err: &Error, protocol: Protocol) -> actix_web::HttpResponse {
    const HOLD: Duration = Duration::from_secs(1);
    let body = Bytes::from(err.body_in(protocol));
    let length = body.len() as u64;
    let held = futures_util::stream::once(async move { Ok::<_, Error>(body) }).chain(
        futures_util::stream::once(async {
            tokio::time::sleep(HOLD).await;
            Ok(Bytes::new())
        }),
    );
    err.response_in(protocol)
        .set_body(actix_web::body::SizedStream::new(length, held))
        .map_into_boxed_body()
}
