//! UsageTap: forwards every chunk of an answer untouched while a copy feeds the usage parser;
//! when the answer ends — completed, cut, idle, aborted by shutdown, or dropped because the
//! client left — it sends exactly one record to the aggregator.
//!
//! A client that leaves before the answer's usage has come does not take the output with it
//! for free: the tap reads on for a short grace ([`LINGER`]) to the answer's own end, so the
//! usage the upstream bills is counted; when the end does not come in time, the upstream is
//! cut (it stops generating) and the output is estimated from the text the answer carried,
//! and the record says `estimated`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use actix_web::web::Bytes;
use futures_util::stream::LocalBoxStream;
use futures_util::{Stream, StreamExt};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::record::{Outcome, RequestRecord};
use super::Recorder;
use crate::client_stall::StallWatch;
use crate::protocol::UsageParser;
use crate::quotas::QuotaHold;
use crate::readers::text::TextMeter;

/// How long an answer is read on once its client has left, for its usage to arrive. Short:
/// an answer cut off in the middle should stop being generated (and billed) upstream soon;
/// an answer whose text is all out has its usage right behind it.
pub const LINGER: Duration = Duration::from_millis(500);

/// Set at the first stop signal: answers cut while stopping are recorded at once, without the
/// grace read (the workers that would run it are going away).
pub static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Why a forwarded answer stopped early; actix then closes the client connection without
/// ending the body properly, so the client sees the answer was cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream broke off the answer: {0}")]
    Upstream(String),
    #[error("upstream was silent for more than {0:?}")]
    Idle(Duration),
    #[error("stopping now")]
    Shutdown,
}

pub struct UsageTap {
    /// `None` once handed to the lingering read after the client left.
    inner: Option<LocalBoxStream<'static, Result<Bytes, String>>>,
    parser: Option<UsageParser>,
    /// The answer's text so far, for an estimate when its usage never comes.
    meter: Option<AnswerText>,
    /// `Some` until the one record is sent.
    record: Option<RequestRecord>,
    /// The request's hold on its quotas, settled with its usage when the record is finished.
    quota: Option<QuotaHold>,
    recorder: Recorder,
    received: Instant,
    head_received: Instant,
    /// Time sluice spent before the upstream request went out.
    overhead_before: Duration,
    head_sent: Option<Instant>,
    /// The upstream's `content-length`, to tell a complete answer from a cut one.
    declared_length: Option<u64>,
    forwarded: u64,
    idle: Duration,
    last_activity: Instant,
    /// Armed the first time the upstream makes us wait: most answers never need them.
    waiting: Option<Waiting>,
    shutdown: CancellationToken,
    /// Ends the connection when the client stops taking the answer.
    stall: StallWatch,
    /// An early end, held back one poll: actix drops the connection as soon as a body fails,
    /// without writing what it has buffered, so the failure is reported only after a `Pending`
    /// has let it flush the bytes already forwarded.
    failure: Option<BodyError>,
    /// Every declared byte arrived and the answer was recorded: what is left is the upstream
    /// body's own end, which must still be read so its connection goes back to the pool.
    draining: bool,
}

/// The answer's text, metered only while the count may still matter: the estimate is made
/// only for an answer that did not complete, so a chunk with which the answer is complete is
/// held (not copied), and metered only if more comes, which may undo the completion (a JSON
/// answer with bytes after its end), or if the estimate is made after all. Most answers end with
/// the chunk that completes them, which is then never metered (for a small JSON answer, that is
/// the whole answer).
struct AnswerText {
    meter: TextMeter,
    unmetered: Option<Bytes>,
}

impl AnswerText {
    fn new(meter: TextMeter) -> Self {
        Self {
            meter,
            unmetered: None,
        }
    }

    /// The next chunk; `complete` when the answer is complete with it.
    fn read(&mut self, chunk: &Bytes, complete: bool) {
        self.catch_up();
        if complete {
            self.unmetered = Some(chunk.clone());
        } else {
            self.meter.feed(chunk);
        }
    }

    /// The estimate of the text read so far, every chunk counted.
    fn estimated_tokens(&mut self) -> u64 {
        self.catch_up();
        self.meter.estimated_tokens()
    }

    fn catch_up(&mut self) {
        if let Some(held) = self.unmetered.take() {
            self.meter.feed(&held);
        }
    }
}

struct Waiting {
    idle_timer: Pin<Box<Sleep>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
}

/// When the request arrived and when the upstream's response head came back.
pub struct Timing {
    pub received: Instant,
    pub overhead_before: Duration,
    pub head_received: Instant,
}

/// How the answer's body is framed and watched.
pub struct Watch {
    pub idle: Duration,
    pub declared_length: Option<u64>,
    /// Cancelled by a second stop signal: streams in flight end at once.
    pub shutdown: CancellationToken,
    /// The client's side: `idle_ms` without taking a chunk ends the connection.
    pub stall: StallWatch,
}

impl UsageTap {
    pub fn new<S, E>(
        inner: S,
        parser: Option<UsageParser>,
        meter: Option<TextMeter>,
        record: RequestRecord,
        recorder: Recorder,
        timing: Timing,
        watch: Watch,
    ) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + 'static,
        E: std::fmt::Display,
    {
        Self {
            inner: Some(
                inner
                    .map(|chunk| chunk.map_err(|e| e.to_string()))
                    .boxed_local(),
            ),
            parser,
            meter: meter.map(AnswerText::new),
            record: Some(record),
            quota: None,
            recorder,
            received: timing.received,
            head_received: timing.head_received,
            overhead_before: timing.overhead_before,
            head_sent: None,
            declared_length: watch.declared_length,
            forwarded: 0,
            idle: watch.idle,
            last_activity: Instant::now(),
            waiting: None,
            shutdown: watch.shutdown,
            stall: watch.stall,
            failure: None,
            draining: false,
        }
    }

    /// The answer has no body to stream (HEAD, 204, 304, `content-length: 0`): record it as
    /// complete now.
    pub fn complete(mut self) {
        self.head_sent = Some(Instant::now());
        self.finish(Outcome::Completed);
    }

    /// Keeps the request's hold on its quotas until the answer ends.
    pub fn hold_quota(&mut self, hold: Option<QuotaHold>) {
        self.quota = hold;
    }

    fn finish(&mut self, outcome: Outcome) {
        self.finish_at(outcome, Instant::now(), SystemTime::now());
    }

    /// Records the answer as it ended at `ended` (the client may have left earlier than the
    /// record is made, see [`LINGER`]).
    fn finish_at(&mut self, outcome: Outcome, ended: Instant, ended_at: SystemTime) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        let mut outcome = outcome;
        if let Some(parser) = self.parser.as_mut() {
            let completed = parser.answer_status().completed;
            let mut answer = parser.finish();
            if outcome.client_left() && !completed {
                if let Some(meter) = self.meter.as_mut() {
                    // The upstream bills the output it generated: at least the text it sent.
                    let estimate = meter.estimated_tokens();
                    answer.usage.output_tokens = answer.usage.output_tokens.max(estimate);
                    record.estimated = true;
                }
            }
            // The status said success before the stream reported its failure.
            if outcome == Outcome::Completed && record.streamed && answer.error_type.is_some() {
                outcome = Outcome::UpstreamErrorEvent;
            }
            record.usage = answer.usage;
            record.priced_usd = answer.priced_usd;
            record.usage_missing = answer.usage_missing;
            if answer.model.is_some() {
                record.model = answer.model;
            }
        }
        self.meter = None; // no estimate is made after the record
        record.outcome = outcome;
        record.finished_at = ended_at;
        record.total = ended.saturating_duration_since(self.received);
        let head_sent = self.head_sent.unwrap_or(ended);
        record.overhead =
            Some(self.overhead_before + head_sent.saturating_duration_since(self.head_received));
        // Before the answer's end reaches the client: its next request sees this spend.
        if let Some(hold) = self.quota.take() {
            hold.settle(
                record.model.as_deref(),
                &record.usage,
                record.priced_usd,
                record.finished_at,
            );
        }
        self.recorder.record(record);
    }

    /// Whether a body that ended cleanly is really all of the answer. awc reports an upstream
    /// that closed its connection mid-body as a normal end, so the declared length and, for
    /// Anthropic answers, the answer's own end (`message_stop`, the closing brace, or an
    /// `error` event) decide.
    fn ended_early(&self) -> bool {
        if let Some(declared) = self.declared_length {
            if self.forwarded < declared {
                return true;
            }
        }
        match &self.parser {
            Some(parser) if parser.reads_answers() => {
                let answer = parser.answer_status();
                !answer.completed && !answer.errored
            }
            _ => false,
        }
    }

    /// Waits for more of the answer, the idle timeout, or a shutdown that cannot wait. The idle
    /// timer is re-armed lazily: chunks only note the time, and a timer that fires early is
    /// pushed to `last_activity + idle`.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let deadline = self.last_activity + self.idle;
        let shutdown = self.shutdown.clone();
        let waiting = self.waiting.get_or_insert_with(|| Waiting {
            idle_timer: Box::pin(tokio::time::sleep_until(deadline.into())),
            shutdown: Box::pin(shutdown.cancelled_owned()),
        });
        if waiting.shutdown.as_mut().poll(cx).is_ready() {
            return self.fail(Outcome::Shutdown, BodyError::Shutdown, cx);
        }
        loop {
            if waiting.idle_timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last_activity + self.idle;
            if deadline <= Instant::now() {
                return self.fail(Outcome::IdleTimeout, BodyError::Idle(self.idle), cx);
            }
            waiting.idle_timer.as_mut().reset(deadline.into());
        }
    }

    /// Records the early end now and reports it on the next poll (see `failure`).
    fn fail(
        &mut self,
        outcome: Outcome,
        error: BodyError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.finish(outcome);
        self.failure = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Stream for UsageTap {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(failure) = this.failure.take() {
            return Poll::Ready(Some(Err(failure)));
        }
        if this.record.is_none() {
            if !this.draining {
                return Poll::Ready(None);
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            // awc returns the connection to its pool only once the body has reached its end.
            return match inner.as_mut().poll_next(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(_) => {
                    this.draining = false;
                    Poll::Ready(None)
                }
            };
        }
        // actix polls the body right after it has written the response head, and again
        // whenever it has room for more.
        this.head_sent.get_or_insert_with(Instant::now);
        this.stall.asked();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.read(&chunk);
                this.forwarded += chunk.len() as u64;
                this.last_activity = Instant::now();
                // All the declared bytes are here: the answer is complete before its last chunk
                // goes out, so its record (and quota spend) is made before the client has it.
                if this.declared_length == Some(this.forwarded) && !this.ended_early() {
                    this.finish(Outcome::Completed);
                    this.draining = true;
                }
                let more_to_come =
                    !matches!(this.declared_length, Some(declared) if this.forwarded >= declared);
                this.stall.handed_out(more_to_come);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.fail(Outcome::UpstreamCut, BodyError::Upstream(err), cx)
            }
            Poll::Ready(None) if this.ended_early() => this.fail(
                Outcome::UpstreamCut,
                BodyError::Upstream("the upstream closed before the answer was complete".into()),
                cx,
            ),
            Poll::Ready(None) => {
                this.finish(Outcome::Completed);
                Poll::Ready(None)
            }
            Poll::Pending => this.poll_waiting(cx),
        }
    }
}

impl UsageTap {
    /// A chunk of the answer, as it goes out (or, once the client has left, as it comes in).
    fn read(&mut self, chunk: &Bytes) {
        if let Some(parser) = self.parser.as_mut() {
            parser.feed(chunk);
        }
        if let Some(meter) = self.meter.as_mut() {
            let complete = self
                .parser
                .as_ref()
                .is_some_and(|parser| parser.answer_status().completed);
            meter.read(chunk, complete);
        }
    }

    /// Whether an answer left by its client is worth reading on: its reader can tell its end
    /// and the end has not come yet.
    fn usage_still_to_come(&self) -> bool {
        self.record.is_some()
            && self.inner.is_some()
            && self.parser.as_ref().is_some_and(|parser| {
                let status = parser.answer_status();
                parser.reads_answers() && !status.completed && !status.errored
            })
    }

    /// What is left of the answer once its client has gone: the stream, the readers and the
    /// record, taken out of `self` so that dropping `self` records nothing.
    fn take_rest(&mut self) -> UsageTap {
        UsageTap {
            inner: self.inner.take(),
            parser: self.parser.take(),
            meter: self.meter.take(),
            record: self.record.take(),
            quota: self.quota.take(),
            recorder: self.recorder.clone(),
            received: self.received,
            head_received: self.head_received,
            overhead_before: self.overhead_before,
            head_sent: self.head_sent,
            declared_length: self.declared_length,
            forwarded: self.forwarded,
            idle: self.idle,
            last_activity: self.last_activity,
            waiting: None,
            shutdown: self.shutdown.clone(),
            // Never asked for a chunk again: it has no client to watch.
            stall: StallWatch::new(None, self.idle),
            failure: None,
            draining: false,
        }
    }

    /// Reads the answer on, for at most [`LINGER`], until its own end (its usage) arrives;
    /// the bytes are parsed, never kept. Then records it with the client's `outcome`: with the
    /// answer's own usage when it came, else with the output estimated.
    async fn linger(mut self, outcome: Outcome, left: Instant, left_at: SystemTime) {
        let Some(mut inner) = self.inner.take() else {
            return self.finish_at(outcome, left, left_at);
        };
        let deadline = tokio::time::Instant::from_std(left + LINGER);
        let shutdown = self.shutdown.clone();
        loop {
            let next = tokio::select! {
                next = inner.next() => next,
                () = tokio::time::sleep_until(deadline) => None,
                () = shutdown.cancelled() => None,
            };
            match next {
                Some(Ok(chunk)) => {
                    self.read(&chunk);
                    let still_to_come = self.parser.as_ref().is_some_and(|parser| {
                        let status = parser.answer_status();
                        !status.completed && !status.errored
                    });
                    if !still_to_come {
                        break;
                    }
                }
                _ => break,
            }
        }
        self.finish_at(outcome, left, left_at);
    }
}

impl Drop for UsageTap {
    fn drop(&mut self) {
        // Dropped before the end: actix gave up on the body because the client went away (or
        // stopped reading and was closed).
        let outcome = if self.stall.stalled() {
            Outcome::ClientStalled
        } else {
            Outcome::ClientGone
        };
        if self.usage_still_to_come() && !STOPPING.load(std::sync::atomic::Ordering::Relaxed) {
            let rest = self.take_rest();
            actix_rt::spawn(rest.linger(outcome, Instant::now(), SystemTime::now()));
            return;
        }
        self.finish(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::anthropic::TEXT_KEYS;

    #[test]
    fn the_estimate_counts_every_chunk_however_the_answer_completed_between_them() {
        let body =
            b"data: {\"delta\":{\"text\":\"Hello there\"}}\n\ndata: {\"text\":\"more text\"}\n\n";
        let mut whole = TextMeter::new(TEXT_KEYS);
        whole.feed(body);
        for cut in 0..=body.len() {
            for completes in 0..4u8 {
                let mut text = AnswerText::new(TextMeter::new(TEXT_KEYS));
                let (first, second) = body.split_at(cut);
                text.read(&Bytes::copy_from_slice(first), completes & 1 != 0);
                text.read(&Bytes::copy_from_slice(second), completes & 2 != 0);
                assert_eq!(
                    text.estimated_tokens(),
                    whole.estimated_tokens(),
                    "cut at {cut}, completes {completes}"
                );
            }
        }
    }
}
