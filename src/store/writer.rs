//! The writer: a thread of its own that takes rows from a bounded queue, writes them in batches
//! (one transaction each, at least once per `commit_interval`), retries failures with backoff
//! while counting them, and deletes rows past the retention a few at a time between batches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::db::{Db, Pacing, Target, DAY_MS};
use super::query::{self, StatsWindow, UsageQuery, UsageReport};
use super::{unix_ms, StoreError, StoreRow};

/// How the store runs. [`StoreOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub target: Target,
    /// Rows older than this many days are deleted.
    pub retention_days: u32,
    /// Most rows waiting to be written; more are dropped and counted in `dropped`.
    pub queue_rows: usize,
    /// Most memory the rows waiting to be written (queued or in the batch being written) may
    /// hold; rows beyond it are dropped and counted in `dropped`, like rows beyond `queue_rows`.
    /// Rows with long keys are larger, so this, not the row count, is what bounds memory.
    pub queue_bytes: usize,
    /// Most rows per transaction.
    pub batch_rows: usize,
    /// Longest a row waits in the queue before its batch is written.
    pub commit_interval: Duration,
    /// How long `close` keeps retrying the final write.
    pub close_timeout: Duration,
    /// How often the retention sweep starts.
    pub retention_interval: Duration,
    /// Test hook: caps an SQLite file at this many pages (0 = no cap), to simulate a full disk.
    #[doc(hidden)]
    pub sqlite_max_pages: Option<Arc<AtomicU64>>,
}

impl StoreOptions {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            retention_days: 400,
            queue_rows: 100_000,
            queue_bytes: 12 << 20,
            batch_rows: 5_000,
            commit_interval: Duration::from_millis(250),
            close_timeout: Duration::from_secs(10),
            retention_interval: Duration::from_secs(60),
            sqlite_max_pages: None,
        }
    }
}

/// What `/stats` (`store`) and `/metrics` show of the writer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreStatus {
    pub backend: &'static str,
    /// Rows committed by this process.
    pub rows_written: u64,
    /// Rows handed over and not yet committed.
    pub pending: u64,
    /// Rows refused because the queue was full.
    pub dropped: u64,
    /// RFC 3339 time of the last successful commit.
    pub last_commit: Option<String>,
    /// Failed write attempts (each retry counts).
    pub failures: u64,
    /// The last write failed and is being retried.
    pub failing: bool,
    pub last_error: Option<String>,
    /// Rows deleted by the retention.
    pub retention_deleted: u64,
    /// Times the SQLite file was found deleted or replaced while sluice ran, and opened anew.
    pub file_reopened: u64,
}

impl StoreStatus {
    /// The writer's state as OpenMetrics families (to go before `# EOF`).
    pub fn openmetrics(&self) -> String {
        let last_commit = self
            .last_commit
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(0.0, |t| t.as_millisecond() as f64 / 1e3);
        let families: [(&str, &str, &str, String); 6] = [
            (
                "sluice_store_rows_written",
                "counter",
                "Rows the store committed.",
                format!("{}", self.rows_written),
            ),
            (
                "sluice_store_rows_dropped",
                "counter",
                "Rows refused because the store's queue was full.",
                format!("{}", self.dropped),
            ),
            (
                "sluice_store_write_failures",
                "counter",
                "Failed store write attempts (each retry counts).",
                format!("{}", self.failures),
            ),
            (
                "sluice_store_pending_rows",
                "gauge",
                "Rows handed to the store and not yet committed.",
                format!("{}", self.pending),
            ),
            (
                "sluice_store_failing",
                "gauge",
                "1 while the store's last write failed and is being retried.",
                format!("{}", u8::from(self.failing)),
            ),
            (
                "sluice_store_last_commit_timestamp_seconds",
                "gauge",
                "Unix time of the store's last commit (0 = none yet).",
                format!("{last_commit}"),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in families {
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample} {value}\n"
            ));
        }
        out
    }
}

#[derive(Default)]
struct Queue {
    rows: VecDeque<StoreRow>,
    /// What the queued rows and the batch being written hold ([`StoreRow::held_bytes`]).
    held_bytes: usize,
    closing: bool,
    /// Someone waits for the rows queued so far: commit them without waiting for more.
    urgent: bool,
}

#[derive(Default)]
struct Health {
    last_commit_ms: Option<i64>,
    failing: bool,
    last_error: Option<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    queue_rows: usize,
    queue_bytes: usize,
    in_flight: AtomicU64,
    /// Rows accepted into the queue (not dropped), ever.
    accepted: AtomicU64,
    rows_written: AtomicU64,
    dropped: AtomicU64,
    failures: AtomicU64,
    retention_deleted: AtomicU64,
    file_reopened: AtomicU64,
    /// The writer reopened the file: the reader's connection is to the old one.
    reader_stale: AtomicBool,
    health: Mutex<Health>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Inner {
    shared: Arc<Shared>,
    target: Target,
    writer: Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
    reader: Mutex<Option<Db>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(err) = self.finish() {
            tracing::error!("{err}");
        }
    }
}

impl Inner {
    fn finish(&self) -> Result<(), StoreError> {
        let Some(writer) = lock(&self.writer).take() else {
            return Ok(());
        };
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_all();
        writer
            .join()
            .unwrap_or_else(|_| Err(StoreError::Database("the writer thread panicked".into())))
    }
}

/// The running store. Cheap to clone; the last clone dropped flushes like [`StoreHandle::close`].
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<Inner>,
}

/// Opens the database (creating and migrating it; refusing one it cannot read) and starts the
/// writer thread.
pub fn open(options: StoreOptions) -> Result<StoreHandle, StoreError> {
    let db = Db::open(&options.target, true)?;
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        wake: Condvar::new(),
        queue_rows: options.queue_rows.max(1),
        queue_bytes: options.queue_bytes,
        in_flight: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        rows_written: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        retention_deleted: AtomicU64::new(0),
        file_reopened: AtomicU64::new(0),
        reader_stale: AtomicBool::new(false),
        health: Mutex::new(Health::default()),
    });
    let target = options.target.clone();
    let writer = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("sluice-store".into())
            .spawn(move || {
                crate::service::run_as_background();
                Writer::new(options, shared, db).run()
            })
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?
    };
    Ok(StoreHandle {
        inner: Arc::new(Inner {
            shared,
            target,
            writer: Mutex::new(Some(writer)),
            reader: Mutex::new(None),
        }),
    })
}

impl StoreHandle {
    /// Queues rows for the writer. Never blocks on the database; rows beyond the queue's bound
    /// are dropped and counted (`dropped`), and a warning is logged.
    pub fn submit(&self, mut rows: Vec<StoreRow>) {
        if rows.is_empty() {
            return;
        }
        rows.iter_mut().for_each(StoreRow::bound);
        let shared = &self.inner.shared;
        let dropped = {
            let mut queue = lock(&shared.queue);
            let mut accepted = 0;
            let offered = rows.len() as u64;
            for row in rows {
                let bytes = row.held_bytes();
                if queue.rows.len() < shared.queue_rows
                    && queue.held_bytes + bytes <= shared.queue_bytes
                {
                    queue.held_bytes += bytes;
                    queue.rows.push_back(row);
                    accepted += 1;
                }
            }
            shared.accepted.fetch_add(accepted, Ordering::Relaxed);
            offered - accepted
        };
        shared.wake.notify_one();
        if dropped > 0 {
            let before = shared.dropped.fetch_add(dropped, Ordering::Relaxed);
            let after = before.saturating_add(dropped);
            // When the total passes a power of two: a long outage does not flood the log.
            if before == 0 || after.ilog2() != before.ilog2() {
                tracing::warn!(
                    dropped_total = after,
                    "store queue full: rows dropped (the database is not keeping up)"
                );
            }
        }
    }

    pub fn status(&self) -> StoreStatus {
        let shared = &self.inner.shared;
        let queued = lock(&shared.queue).rows.len() as u64;
        let health = lock(&shared.health);
        StoreStatus {
            backend: self.inner.target.backend_name(),
            rows_written: shared.rows_written.load(Ordering::Relaxed),
            pending: queued + shared.in_flight.load(Ordering::Relaxed),
            dropped: shared.dropped.load(Ordering::Relaxed),
            last_commit: health.last_commit_ms.map(super::rfc3339_ms),
            failures: shared.failures.load(Ordering::Relaxed),
            failing: health.failing,
            last_error: health.last_error.clone(),
            retention_deleted: shared.retention_deleted.load(Ordering::Relaxed),
            file_reopened: shared.file_reopened.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer after it has written everything queued. Errs when the last write still
    /// failed after `close_timeout`: those rows are lost, and the exit status should say so.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner.finish()
    }

    /// Answers `/usage`. Blocking: call it from a blocking thread.
    pub fn usage(&self, usage: &UsageQuery, now: SystemTime) -> Result<UsageReport, StoreError> {
        self.with_reader(|db| query::usage(db, usage, now))
    }

    /// Whether [`close`](Self::close) was called (or the last handle is going).
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.shared.queue).closing
    }

    /// The database this store writes to.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// Whether several sluices may write to this store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.inner.target, Target::Postgres(_))
    }

    /// The highest row number stored (0 for none). Blocking.
    pub fn max_id(&self) -> Result<i64, StoreError> {
        self.with_reader(|db| {
            let rows = db.select("SELECT MAX(id) FROM requests", &[], &[super::db::Col::Int])?;
            Ok(rows.first().map_or(0, |r| r[0].int()))
        })
    }

    /// Stored rows numbered above `after_id` that finished at or after `since_ms`, in id order
    /// (at most `limit`), leaving out those `skip_instance` wrote. Blocking.
    pub fn rows_after(
        &self,
        after_id: i64,
        since_ms: i64,
        skip_instance: Option<&str>,
        limit: usize,
    ) -> Result<Vec<super::replay::Numbered>, StoreError> {
        self.with_reader(|db| {
            super::replay::rows_after(db, after_id, since_ms, skip_instance, limit)
        })
    }

    /// Waits (at most `timeout`) until every row submitted so far is committed, asking the
    /// writer to commit at once. Returns whether they are. Blocking.
    pub fn settle(&self, timeout: Duration) -> bool {
        let shared = &self.inner.shared;
        let target = shared.accepted.load(Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        loop {
            if shared.rows_written.load(Ordering::Relaxed) >= target {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            lock(&shared.queue).urgent = true;
            shared.wake.notify_all();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Every `/stats` group over `[since_ms, until_ms)` (unbounded when `None`), with at most
    /// `recent_limit` keys in each group clients can grow, the most recently active, and the
    /// `model_limit` most used models (the rest under `"other"`). Blocking.
    pub fn window(
        &self,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
        recent_limit: usize,
        model_limit: usize,
    ) -> Result<StatsWindow, StoreError> {
        self.with_reader(|db| query::window(db, since_ms, until_ms, recent_limit, model_limit))
    }

    fn with_reader<T>(&self, run: impl Fn(&mut Db) -> Result<T, String>) -> Result<T, StoreError> {
        let mut reader = lock(&self.inner.reader);
        if self
            .inner
            .shared
            .reader_stale
            .swap(false, Ordering::Relaxed)
        {
            *reader = None;
        }
        if reader.is_none() {
            *reader = Some(Db::open(&self.inner.target, false)?);
        }
        let db = reader.as_mut().expect("opened above");
        let mut result = run(db);
        if result.is_err() && db.is_postgres() {
            // The connection may be gone (server restarted): try once more on a new one.
            *reader = None;
            let mut fresh = Db::open(&self.inner.target, false)?;
            result = run(&mut fresh);
            if result.is_ok() {
                *reader = Some(fresh);
            }
        }
        result.map_err(StoreError::Database)
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const RETENTION_ROWS_PER_STEP: usize = 2_000;

struct Writer {
    options: StoreOptions,
    shared: Arc<Shared>,
    db: Option<Db>,
    batch: Vec<StoreRow>,
    /// Names this writer's batches in the database: process, start time, sequence.
    writer_id: String,
    batch_seq: u64,
    batch_id: String,
    /// The current batch failed at least once.
    retrying: bool,
    /// Fewer rows than a batch waited behind the current one when it was taken: it is written
    /// [paced](WRITE_PACING). A writer that is behind writes at full speed until it has caught up.
    paced: bool,
    /// Rows written since memory was last given back ([`Writer::give_back_memory`]).
    written_since_trim: usize,
    backoff: Duration,
    next_retention: Instant,
    sweeping: bool,
    /// Device and inode of the SQLite file the connection has open, and when to look again.
    file_id: Option<(u64, u64)>,
    next_file_check: Instant,
}

/// How much of a batch the writer writes before it pauses for a moment (SQLite; a PostgreSQL
/// writer waits on its server anyway): on a core shared with an HTTP worker, the longest the
/// worker waits for it. Measured on one shared core, with the WAL checkpoint limit and the short
/// slices: p99 5.7–6.3 → 3.7–4.0 ms at the same requests/s (docs/performance.md).
const WRITE_PACING: Duration = Duration::from_micros(500);

/// How often the writer checks that its SQLite file is still the one at its path.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Device and inode of the file at `path`, when there is one.
fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Writer {
    fn new(options: StoreOptions, shared: Arc<Shared>, db: Db) -> Self {
        let file_id = match &options.target {
            Target::Sqlite(path) => file_identity(path),
            _ => None,
        };
        Self {
            next_retention: Instant::now() + Duration::from_secs(1).min(options.retention_interval),
            options,
            shared,
            db: Some(db),
            batch: Vec::new(),
            writer_id: format!(
                "{}-{}-{}",
                super::wiring::host_name(),
                std::process::id(),
                unix_ms(SystemTime::now())
            ),
            batch_seq: 0,
            batch_id: String::new(),
            retrying: false,
            paced: false,
            written_since_trim: 0,
            backoff: FIRST_BACKOFF,
            sweeping: false,
            file_id,
            next_file_check: Instant::now() + FILE_CHECK_INTERVAL,
        }
    }

    /// A store file deleted or replaced under a running sluice would take every later row
    /// into the void (the open connection writes on to the old inode) while `/stats` says all
    /// is well: once a second the file at the path is compared with the one open, and on a
    /// difference the store says so (log, `/stats` `store`) and opens the path anew.
    fn check_file_identity(&mut self) {
        let Target::Sqlite(path) = &self.options.target else {
            return;
        };
        if Instant::now() < self.next_file_check || self.db.is_none() {
            return;
        }
        self.next_file_check = Instant::now() + FILE_CHECK_INTERVAL;
        if file_identity(path) == self.file_id {
            return;
        }
        let message = format!(
            "store file {} was deleted or replaced while sluice ran; opened it anew (rows \
             written since then went to the old file)",
            path.display()
        );
        tracing::warn!("{message}");
        self.shared.file_reopened.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.health).last_error = Some(message);
        self.db = None;
        self.shared.reader_stale.store(true, Ordering::Relaxed);
        if let Err(err) = self.connection() {
            self.failed(&err);
        }
    }

    fn run(mut self) -> Result<(), StoreError> {
        let mut close_deadline: Option<Instant> = None;
        loop {
            let closing = self.gather();
            self.check_file_identity();
            if closing && close_deadline.is_none() {
                close_deadline = Some(Instant::now() + self.options.close_timeout);
            }
            if !self.batch.is_empty() {
                let rows = self.batch.len();
                match self.write_batch() {
                    Ok(()) => {
                        self.backoff = FIRST_BACKOFF;
                        self.give_back_memory(rows);
                    }
                    Err(err) => {
                        if let Some(deadline) = close_deadline {
                            if Instant::now() >= deadline {
                                let rows = self.batch.len() + lock(&self.shared.queue).rows.len();
                                return Err(StoreError::FinalWrite { rows, reason: err });
                            }
                        }
                        self.pause(self.backoff, close_deadline);
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            if closing {
                if lock(&self.shared.queue).rows.is_empty() && self.batch.is_empty() {
                    return Ok(());
                }
                continue;
            }
            self.retention_step();
        }
    }

    /// After a burst, once the queue has drained: hands the memory its rows and batches held
    /// back to the system. Freed memory otherwise stays with the process (glibc's allocator
    /// keeps it in its arenas), so one burst of long-keyed rows would stay in RSS for good.
    fn give_back_memory(&mut self, written: usize) {
        const BURST_ROWS: usize = 20_000;
        self.written_since_trim += written;
        if self.written_since_trim < BURST_ROWS || !lock(&self.shared.queue).rows.is_empty() {
            return;
        }
        self.written_since_trim = 0;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free memory of the allocator to the system.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Waits for rows (up to `commit_interval`) and moves up to a batch of them into `batch`.
    /// Returns whether the store is closing.
    fn gather(&mut self) -> bool {
        let mut queue = lock(&self.shared.queue);
        // A retention sweep in progress goes on between batches without waiting.
        let idle_wait = !self.sweeping;
        if idle_wait
            && self.batch.is_empty()
            && !queue.closing
            && queue.rows.len() < self.options.batch_rows
        {
            let deadline = Instant::now() + self.options.commit_interval;
            loop {
                let now = Instant::now();
                if queue.closing
                    || queue.urgent
                    || queue.rows.len() >= self.options.batch_rows
                    || now >= deadline
                {
                    break;
                }
                queue = self
                    .shared
                    .wake
                    .wait_timeout(queue, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        // A batch being retried is not grown: it is retried as the same batch (same id).
        queue.urgent = false;
        if self.batch.is_empty() {
            let take = self.options.batch_rows.min(queue.rows.len());
            self.batch.extend(queue.rows.drain(..take));
            self.paced = queue.rows.len() < self.options.batch_rows;
            self.batch_seq += 1;
            self.batch_id = format!("{}-{}", self.writer_id, self.batch_seq);
            self.retrying = false;
        }
        self.shared
            .in_flight
            .store(self.batch.len() as u64, Ordering::Relaxed);
        queue.closing
    }

    fn connection(&mut self) -> Result<&mut Db, String> {
        if self.db.is_none() {
            self.db = Some(Db::open(&self.options.target, true).map_err(|e| e.to_string())?);
            if let Target::Sqlite(path) = &self.options.target {
                self.file_id = file_identity(path);
            }
            tracing::info!(store = %self.options.target.describe(), "store reconnected");
        }
        Ok(self.db.as_mut().expect("opened above"))
    }

    fn write_batch(&mut self) -> Result<(), String> {
        let max_pages = self
            .options
            .sqlite_max_pages
            .as_ref()
            .map(|p| p.load(Ordering::Relaxed));
        let batch = std::mem::take(&mut self.batch);
        let (batch_id, retrying, paced) = (self.batch_id.clone(), self.retrying, self.paced);
        let result = self.connection().and_then(|db| {
            if let Some(pages) = max_pages {
                db.set_max_pages(pages)?;
            }
            // The last attempt may have committed without us hearing so.
            if retrying && db.batch_committed(&batch_id)? {
                return Ok(());
            }
            let mut pacing = if paced {
                Pacing::every(WRITE_PACING)
            } else {
                Pacing::off()
            };
            db.write_batch(&batch, &batch_id, &mut pacing)
        });
        match result {
            Ok(()) => {
                // The room first: whoever sees the rows counted as written finds it given back.
                let written: usize = batch.iter().map(StoreRow::held_bytes).sum();
                let mut queue = lock(&self.shared.queue);
                queue.held_bytes = queue.held_bytes.saturating_sub(written);
                drop(queue);
                self.shared
                    .rows_written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.shared.in_flight.store(0, Ordering::Relaxed);
                let mut health = lock(&self.shared.health);
                if health.failing {
                    tracing::info!(rows = batch.len(), "store writes resumed");
                }
                health.failing = false;
                health.last_commit_ms = Some(unix_ms(SystemTime::now()));
                Ok(())
            }
            Err(err) => {
                self.batch = batch;
                self.retrying = true;
                self.failed(&err);
                Err(err)
            }
        }
    }

    fn failed(&mut self, err: &str) {
        self.shared.failures.fetch_add(1, Ordering::Relaxed);
        let mut health = lock(&self.shared.health);
        if !health.failing || health.last_error.as_deref() != Some(err) {
            tracing::warn!(
                store = %self.options.target.describe(),
                pending = self.batch.len(),
                "store write failed, will retry: {err}"
            );
        }
        health.failing = true;
        health.last_error = Some(err.to_string());
        drop(health);
        if self.db.as_ref().is_some_and(Db::is_postgres) {
            // A lost connection is not coming back by itself: reconnect on the next attempt.
            self.db = None;
        }
    }

    /// Sleeps `pause`, waking early when the store starts closing (then retries at once, up to
    /// the close deadline).
    fn pause(&self, pause: Duration, close_deadline: Option<Instant>) {
        let until = Instant::now() + pause;
        let until = close_deadline.map_or(until, |d| until.min(d));
        let mut queue = lock(&self.shared.queue);
        let was_closing = queue.closing;
        while Instant::now() < until && queue.closing == was_closing {
            let left = until.saturating_duration_since(Instant::now());
            queue = self
                .shared
                .wake
                .wait_timeout(queue, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// One small retention step, so that a large deletion never holds up the next batch.
    fn retention_step(&mut self) {
        if !self.sweeping {
            if Instant::now() < self.next_retention {
                return;
            }
            self.sweeping = true;
        }
        let keep_ms = i64::from(self.options.retention_days) * 86_400_000;
        let now_ms = unix_ms(SystemTime::now());
        let cutoff = (now_ms - keep_ms).div_euclid(DAY_MS) * DAY_MS;
        let result = self
            .connection()
            .and_then(|db| db.prune(cutoff, RETENTION_ROWS_PER_STEP));
        match result {
            Ok((deleted, more)) => {
                self.shared
                    .retention_deleted
                    .fetch_add(deleted as u64, Ordering::Relaxed);
                if !more {
                    self.sweeping = false;
                    self.next_retention = Instant::now() + self.options.retention_interval;
                }
            }
            Err(err) => {
                tracing::warn!("store retention failed, will retry: {err}");
                self.failed(&err);
                self.sweeping = false;
                self.next_retention = Instant::now() + self.options.retention_interval;
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Scheduling policy, nice value and time slice (ns; 0 where the kernel does not show it)
    /// of each of this process's threads named `name`.
    fn scheduling_of_threads(name: &str) -> Vec<(i64, i64, u64)> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // Fields after the command name: the 3rd field of the line is the first here.
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            let nice = fields[19 - 3].parse().unwrap();
            let policy = fields[41 - 3].parse().unwrap();
            let sched = std::fs::read_to_string(task.path().join("sched")).unwrap_or_default();
            let slice = sched
                .lines()
                .find_map(|line| line.strip_prefix("se.slice"))
                .and_then(|rest| rest.trim_start_matches([' ', ':']).trim().parse().ok())
                .unwrap_or(0);
            found.push((policy, nice, slice));
        }
        found
    }

    #[test]
    fn the_writer_thread_runs_below_the_http_workers() {
        let store = open(StoreOptions::new(Target::memory())).unwrap();
        // Once a row is written, the writer has set itself up.
        store.submit(vec![StoreRow::default()]);
        assert!(store.settle(Duration::from_secs(30)));
        let threads = scheduling_of_threads("sluice-store");
        store.close().unwrap();
        assert!(!threads.is_empty());
        for (policy, nice, slice) in threads {
            assert_eq!(policy, i64::from(libc::SCHED_BATCH));
            assert_eq!(nice, i64::from(crate::service::BACKGROUND_NICE));
            // Kernels before 6.12 keep their own slice; this one shows and honours it.
            if kernel_at_least(6, 12) {
                assert_eq!(u128::from(slice), crate::service::SHORT_SLICE.as_nanos());
            }
        }
    }

    /// Whether the running kernel's version is at least `major.minor`.
    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
    }
}
