//! UsageTap: forwards every chunk of an answer untouched while a copy feeds the usage parser;
//! when the answer ends — completed, cut, idle, or dropped because the client left — it sends
//! exactly one record to the aggregator.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::time::Sleep;

use super::record::{Outcome, RequestRecord};
use super::Recorder;
use crate::usage::UsageParser;

/// Why a forwarded answer stopped early; actix then closes the client connection.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream broke off the answer: {0}")]
    Upstream(String),
    #[error("upstream was silent for more than {0:?}")]
    Idle(Duration),
}

pub struct UsageTap<S> {
    inner: S,
    parser: Option<UsageParser>,
    /// `Some` until the one record is sent.
    record: Option<RequestRecord>,
    recorder: Recorder,
    received: Instant,
    head_received: Instant,
    /// Time sluice spent before the upstream request went out.
    overhead_before: Duration,
    head_sent: Option<Instant>,
    idle: Duration,
    last_activity: Instant,
    /// Armed the first time the upstream makes us wait: most answers never need it.
    idle_timer: Option<Pin<Box<Sleep>>>,
}

/// When the request arrived and when the upstream's response head came back.
pub struct Timing {
    pub received: Instant,
    pub overhead_before: Duration,
    pub head_received: Instant,
}

impl<S> UsageTap<S> {
    pub fn new(
        inner: S,
        parser: Option<UsageParser>,
        record: RequestRecord,
        recorder: Recorder,
        timing: Timing,
        idle: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            inner,
            parser,
            record: Some(record),
            recorder,
            received: timing.received,
            head_received: timing.head_received,
            overhead_before: timing.overhead_before,
            head_sent: None,
            idle,
            last_activity: now,
            idle_timer: None,
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        if let Some(parser) = self.parser.as_mut() {
            let answer = parser.finish();
            record.usage = answer.usage;
            if answer.model.is_some() {
                record.model = answer.model;
            }
        }
        record.outcome = outcome;
        record.finished_at = SystemTime::now();
        record.total = self.received.elapsed();
        let head_sent = self.head_sent.unwrap_or_else(Instant::now);
        record.overhead =
            Some(self.overhead_before + head_sent.saturating_duration_since(self.head_received));
        self.recorder.record(record);
    }
}

impl<S, E> Stream for UsageTap<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.record.is_none() {
            return Poll::Ready(None);
        }
        // actix polls the body right after it has written the response head.
        this.head_sent.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(parser) = this.parser.as_mut() {
                    parser.feed(&chunk);
                }
                this.last_activity = Instant::now();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.finish(Outcome::UpstreamCut);
                Poll::Ready(Some(Err(BodyError::Upstream(err.to_string()))))
            }
            Poll::Ready(None) => {
                this.finish(Outcome::Completed);
                Poll::Ready(None)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }
}

impl<S> UsageTap<S> {
    /// The idle timer is re-armed lazily: chunks only note the time, and a timer that fires
    /// early is pushed to `last_activity + idle` instead of being reset on every chunk.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let deadline = self.last_activity + self.idle;
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last_activity + self.idle;
            if deadline <= Instant::now() {
                self.finish(Outcome::IdleTimeout);
                return Poll::Ready(Some(Err(BodyError::Idle(self.idle))));
            }
            timer.as_mut().reset(deadline.into());
        }
    }
}

impl<S> Drop for UsageTap<S> {
    fn drop(&mut self) {
        // Dropped before the end: actix gave up on the body because the client went away.
        self.finish(Outcome::ClientGone);
    }
}
