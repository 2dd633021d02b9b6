//! The ledger: what each subject of each quota has used in its window and has in flight,
//! shared by every HTTP worker and the aggregator.
//!
//! Each quota's subjects sit behind one mutex whose critical sections are a hash lookup and a
//! few additions (never an await, never I/O), so a worker admits a request without a mailbox
//! round trip. The quota list itself is an atomically swapped snapshot, replaced on reload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::decision::{self, LimitKind, Reached};
use super::settings::{display_subject, Mode, Quota, RequestSubjects};
use super::window::{seconds_until, Spent, Standing, Tally};

/// Subjects a quota keeps by default. Projects are named by clients, so without a bound a
/// client could grow memory by inventing names.
pub const MAX_SUBJECTS: usize = 10_000;
/// Subjects per quota listed in a report, those nearest their limits first.
pub const REPORT_SUBJECTS: usize = 100;
/// Where new subjects count once a quota's table is full of subjects whose spend still counts.
pub const FOLDED_SUBJECT: &str = "(other)";
/// `retry-after` for a concurrency refusal: a slot frees when some request ends, which nobody
/// can predict; a second keeps well-behaved clients from hammering.
const CONCURRENCY_RETRY_S: u64 = 1;
/// How often a full table is searched for subjects that can be forgotten.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_secs(1);

/// A request that a quota refuses (or, in shadow mode, would refuse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub quota: String,
    /// The subject as shown to people (`alice`, `alice / atlas`, `everyone`).
    pub subject: String,
    /// Without the `sluice: ` prefix, which the error body adds.
    pub message: String,
    pub retry_after_s: u64,
    pub mode: Mode,
}

/// An admitted request's hold on the quotas it falls under: one request in flight for each,
/// released when the guard is dropped — answered, failed, or abandoned by the client alike.
/// [`settle`](Self::settle) charges the request's cost on the way.
#[must_use = "dropping the guard ends the request's hold on its quotas"]
pub struct QuotaGuard {
    held: Vec<Held>,
}

struct Held {
    book: Arc<QuotaBook>,
    subject: String,
    /// When the request was counted (to un-count it from the right window or bucket).
    admitted_at: Timestamp,
    claim: Claim,
}

/// What an admission takes. A request is counted and holds a slot (`max_concurrent`) until it
/// ends. A WebSocket holds a slot while it is open but is not itself a request: each turn on it
/// (a response the client asks for) is, counted and judged on its own, in the slot of its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Request,
    Socket,
    Turn,
}

impl Claim {
    /// Which limits an admission of this claim is judged against.
    fn judges(self, kind: LimitKind) -> bool {
        match self {
            Claim::Request => true,
            Claim::Socket => kind == LimitKind::Concurrent,
            Claim::Turn => kind != LimitKind::Concurrent,
        }
    }

    fn takes_slot(self) -> bool {
        self != Claim::Turn
    }

    fn counts_request(self) -> bool {
        self != Claim::Socket
    }
}

impl QuotaGuard {
    /// A guard that holds nothing (no quota applies).
    pub fn none() -> QuotaGuard {
        QuotaGuard { held: Vec::new() }
    }

    /// Charges the finished request's cost and tokens (its request was counted at admission)
    /// to every subject it was admitted under, then releases them.
    pub fn settle(mut self, spent: Spent, at: Timestamp) {
        let spent = Spent {
            requests: 0,
            ..spent
        };
        for held in std::mem::take(&mut self.held) {
            held.book
                .release(&held.subject, Some((spent, at)), held.claim.takes_slot());
        }
    }

    /// Un-counts the request everywhere it was admitted (another quota refused it after all)
    /// and frees its slots.
    pub fn withdraw(mut self) {
        for held in std::mem::take(&mut self.held) {
            let counted = held.claim.counts_request();
            if let (Some(window), true) = (held.book.quota.window, counted) {
                let mut subjects = held.book.shared.lock();
                if let Some(entry) = subjects.map.get_mut(&held.subject) {
                    entry
                        .tally
                        .take_back(window, held.admitted_at, Spent::new(0.0, 0, 1));
                }
            }
            held.book
                .release(&held.subject, None, held.claim.takes_slot());
        }
    }

    /// Takes over what `other` holds (a second admission of the same request).
    pub fn join(&mut self, mut other: QuotaGuard) {
        self.held.append(&mut other.held);
    }

    /// Names of the quotas held, for logs and tests.
    pub fn quotas(&self) -> Vec<&str> {
        self.held
            .iter()
            .map(|h| h.book.quota.name.as_str())
            .collect()
    }
}

impl Drop for QuotaGuard {
    fn drop(&mut self) {
        for held in &self.held {
            held.book
                .release(&held.subject, None, held.claim.takes_slot());
        }
    }
}

/// A request admitted: the guard to keep until it ends, and what shadow quotas would have
/// refused (to be logged).
pub struct Admission {
    pub guard: QuotaGuard,
    pub would_refuse: Vec<Refusal>,
}

/// Which quotas an admission judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaSet {
    All,
    /// Those that do not select by model (judged before the request body is read).
    WithoutModel,
    /// Those that select by model (judged once the body has shown the model).
    ByModel,
}

impl QuotaSet {
    fn includes(self, quota: &Quota) -> bool {
        match self {
            QuotaSet::All => true,
            QuotaSet::WithoutModel => !quota.needs_model(),
            QuotaSet::ByModel => quota.needs_model(),
        }
    }
}

/// Spend per (quota, subject) and requests in flight.
pub struct Ledger {
    books: ArcSwap<Vec<Arc<QuotaBook>>>,
    subject_cap: usize,
    /// Serialises reloads (the request path never takes it).
    applying: Mutex<()>,
}

/// One quota with its subjects. A reload that keeps a quota's counting (see
/// [`Quota::counts_like`]) makes a new book around the same shared state.
struct QuotaBook {
    quota: Quota,
    shared: Arc<SharedBook>,
}

#[derive(Default)]
struct SharedBook {
    subjects: Mutex<Subjects>,
    refused: AtomicU64,
    would_refuse: AtomicU64,
    /// Requests counted under [`FOLDED_SUBJECT`] because the table was full.
    folded: AtomicU64,
}

impl SharedBook {
    fn lock(&self) -> MutexGuard<'_, Subjects> {
        self.subjects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Default)]
struct Subjects {
    map: HashMap<String, Entry>,
    last_sweep: Option<Timestamp>,
}

struct Entry {
    tally: Tally,
    in_flight: u64,
    refused: u64,
    would_refuse: u64,
}

impl QuotaBook {
    /// The entry for `subject`, created if needed. When the table is full, subjects whose
    /// spend no longer counts are forgotten (at most once a second); if none can be, the
    /// newcomer counts under [`FOLDED_SUBJECT`] — a full table never forgets spend that still
    /// counts, so inventing names cannot reset anyone's quota.
    fn entry<'s>(
        &self,
        subjects: &'s mut Subjects,
        subject: &str,
        cap: usize,
        now: Timestamp,
    ) -> (&'s mut Entry, String) {
        let key = if subjects.map.contains_key(subject) {
            subject.to_string()
        } else {
            if subjects.map.len() >= cap {
                self.sweep(subjects, now);
            }
            if subjects.map.len() >= cap && subject != FOLDED_SUBJECT {
                self.shared.folded.fetch_add(1, Ordering::Relaxed);
                FOLDED_SUBJECT.to_string()
            } else {
                subject.to_string()
            }
        };
        let window = self.quota.window;
        let entry = subjects.map.entry(key.clone()).or_insert_with(|| Entry {
            tally: window.map(Tally::new).unwrap_or(Tally::Empty),
            in_flight: 0,
            refused: 0,
            would_refuse: 0,
        });
        (entry, key)
    }

    fn sweep(&self, subjects: &mut Subjects, now: Timestamp) {
        let due = subjects
            .last_sweep
            .map_or(true, |last| now.duration_since(last) >= SWEEP_EVERY);
        if !due {
            return;
        }
        subjects.last_sweep = Some(now);
        let quota = &self.quota;
        subjects.map.retain(|_, entry| {
            let counts = match quota.window {
                Some(window) => !entry.tally.is_spent_out(window, &quota.timezone, now),
                None => false,
            };
            entry.in_flight > 0 || counts
        });
    }

    /// Ends a request's hold on `subject`, charging what it spent (when it is known) in the
    /// same critical section. The entry is there: one with requests in flight is never
    /// forgotten.
    fn release(&self, subject: &str, charge: Option<(Spent, Timestamp)>, slot: bool) {
        let mut subjects = self.shared.lock();
        let Some(entry) = subjects.map.get_mut(subject) else {
            return;
        };
        if slot {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
        if let (Some(window), Some((spent, at))) = (self.quota.window, charge) {
            if !spent.is_zero() {
                entry.tally.add(window, &self.quota.timezone, at, spent);
            }
        }
    }

    /// The refusal for `subject`, given the limits its entry reaches (at least one).
    fn refusal(
        &self,
        subject: &str,
        entry: &Entry,
        reached: &[Reached],
        now: Timestamp,
    ) -> Refusal {
        let quota = &self.quota;
        let first = reached[0];
        let windowed = reached.iter().any(|r| r.kind != LimitKind::Concurrent);
        let frees_at = match quota.window {
            Some(window) if windowed => entry.tally.frees_at(window, &quota.timezone, now, |s| {
                decision::window_limit_reached(&quota.limits, s)
            }),
            _ => None,
        };
        let retry_after_s = match frees_at {
            Some(at) => seconds_until(now, at),
            None => CONCURRENCY_RETRY_S,
        };
        let subject = display_subject(subject).into_owned();
        let shown_frees_at = if first.kind == LimitKind::Concurrent {
            None
        } else {
            frees_at
        };
        Refusal {
            message: decision::refusal_message(
                &quota.name,
                &subject,
                &first,
                quota.window,
                shown_frees_at,
            ),
            quota: quota.name.clone(),
            subject,
            retry_after_s,
            mode: quota.mode,
        }
    }
}

impl Ledger {
    pub fn new(quotas: Vec<Quota>) -> Ledger {
        Ledger::with_subject_cap(quotas, MAX_SUBJECTS)
    }

    /// A ledger that keeps at most `cap` subjects per quota.
    pub fn with_subject_cap(quotas: Vec<Quota>, cap: usize) -> Ledger {
        let books = quotas
            .into_iter()
            .map(|quota| {
                Arc::new(QuotaBook {
                    quota,
                    shared: Arc::default(),
                })
            })
            .collect();
        Ledger {
            books: ArcSwap::from_pointee(books),
            subject_cap: cap.max(1),
            applying: Mutex::new(()),
        }
    }

    /// Takes the quotas of new settings. A quota that still counts the same things over the
    /// same window keeps its spend, requests in flight and refusal counts; its limits and mode
    /// are the new ones from the next request on.
    pub fn apply(&self, quotas: Vec<Quota>) {
        let _one_at_a_time = self
            .applying
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.books.load_full();
        let books = quotas
            .into_iter()
            .map(|quota| {
                let shared = old
                    .iter()
                    .find(|book| book.quota.counts_like(&quota))
                    .map(|book| book.shared.clone())
                    .unwrap_or_default();
                Arc::new(QuotaBook { quota, shared })
            })
            .collect();
        self.books.store(Arc::new(books));
    }

    /// No quota is configured: admission has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.books.load().is_empty()
    }

    /// Some quota selects by model, so admission needs the request's model.
    pub fn needs_model(&self) -> bool {
        self.books.load().iter().any(|b| b.quota.needs_model())
    }

    /// Decides whether a request may go upstream at `now`. Enforced quotas are checked first:
    /// the first that is reached refuses the request. Otherwise every quota it falls under
    /// counts it (a request, one in flight), and shadow quotas that would have refused it say
    /// so in `would_refuse`.
    ///
    /// Each quota is checked and counted in one critical section, so `max_concurrent` and
    /// `max_requests` hold exactly under any number of workers; when a later quota refuses,
    /// the earlier ones are given back.
    pub fn admit(
        &self,
        request: &RequestSubjects<'_>,
        now: Timestamp,
    ) -> Result<Admission, Refusal> {
        self.admit_set(request, now, QuotaSet::All)
    }

    /// [`admit`](Self::admit) for some of the quotas only: the request path judges the quotas
    /// that select by model once the model has been read from the request body.
    pub fn admit_set(
        &self,
        request: &RequestSubjects<'_>,
        now: Timestamp,
        set: QuotaSet,
    ) -> Result<Admission, Refusal> {
        self.admit_claim(request, now, set, Claim::Request)
    }

    /// [`admit_set`](Self::admit_set) for what `claim` takes: a WebSocket when it opens (only
    /// `max_concurrent` is judged), or a turn on it (every limit but `max_concurrent`).
    pub fn admit_claim(
        &self,
        request: &RequestSubjects<'_>,
        now: Timestamp,
        set: QuotaSet,
        claim: Claim,
    ) -> Result<Admission, Refusal> {
        let books = self.books.load();
        let mut guard = QuotaGuard::none();
        let mut would_refuse = Vec::new();
        for pass in [Mode::Enforce, Mode::Shadow] {
            let judged = books
                .iter()
                .filter(|b| b.quota.mode == pass && set.includes(&b.quota));
            for book in judged {
                let Some(subject) = book.quota.subject_of(request) else {
                    continue;
                };
                let quota = &book.quota;
                let mut subjects = book.shared.lock();
                let (entry, key) = book.entry(&mut subjects, &subject, self.subject_cap, now);
                let spent = match quota.window {
                    Some(window) => entry.tally.standing(window, &quota.timezone, now).spent,
                    None => Spent::default(),
                };
                let reached: Vec<Reached> =
                    decision::reached(&quota.limits, &spent, entry.in_flight)
                        .into_iter()
                        .flatten()
                        .filter(|reached| claim.judges(reached.kind))
                        .collect();
                if !reached.is_empty() {
                    let refusal = book.refusal(&key, entry, &reached, now);
                    if pass == Mode::Enforce {
                        entry.refused += 1;
                        book.shared.refused.fetch_add(1, Ordering::Relaxed);
                        drop(subjects);
                        guard.withdraw();
                        return Err(refusal);
                    }
                    entry.would_refuse += 1;
                    book.shared.would_refuse.fetch_add(1, Ordering::Relaxed);
                    would_refuse.push(refusal);
                }
                if claim.takes_slot() {
                    entry.in_flight += 1;
                }
                if let (Some(window), true) = (quota.window, claim.counts_request()) {
                    entry
                        .tally
                        .add(window, &quota.timezone, now, Spent::new(0.0, 0, 1));
                }
                drop(subjects);
                guard.held.push(Held {
                    book: book.clone(),
                    subject: key,
                    admitted_at: now,
                    claim,
                });
            }
        }
        Ok(Admission {
            guard,
            would_refuse,
        })
    }

    /// Charges spend that did not pass through a [`QuotaGuard`] of this ledger: rows loaded
    /// from the store at start, and other instances' requests on a shared store. `at` is when
    /// the request finished; spend of a window that has ended is ignored.
    pub fn charge(&self, request: &RequestSubjects<'_>, spent: Spent, at: Timestamp) {
        for book in self.books.load().iter() {
            let Some(window) = book.quota.window else {
                continue;
            };
            if let Some(subject) = book.quota.subject_of(request) {
                let mut subjects = book.shared.lock();
                let (entry, _) = book.entry(&mut subjects, &subject, self.subject_cap, at);
                entry.tally.add(window, &book.quota.timezone, at, spent);
            }
        }
    }

    /// Loads spend of `subject` (as [`Quota::subject_of`] names it) into quota `quota`:
    /// `at` is the window's start (calendar windows, and the 5-hour block's start) or the
    /// time of the spend (rolling windows). Returns false when no such quota exists.
    pub fn seed(&self, quota: &str, subject: &str, at: Timestamp, spent: Spent) -> bool {
        let books = self.books.load();
        let Some(book) = books.iter().find(|b| b.quota.name == quota) else {
            return false;
        };
        let Some(window) = book.quota.window else {
            return false;
        };
        let mut subjects = book.shared.lock();
        let (entry, _) = book.entry(&mut subjects, subject, self.subject_cap, at);
        entry.tally.add(window, &book.quota.timezone, at, spent);
        true
    }

    /// Refusals per quota, for `/metrics`.
    pub fn refusals(&self) -> Vec<QuotaRefusals> {
        self.books
            .load()
            .iter()
            .map(|book| QuotaRefusals {
                quota: book.quota.name.clone(),
                refused: book.shared.refused.load(Ordering::Relaxed),
                would_refuse: book.shared.would_refuse.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Every quota with its subjects at `now` (at most `max_subjects` each, those nearest
    /// their limits first), for `/stats` `quotas` and the dashboard.
    pub fn report(&self, now: Timestamp, max_subjects: usize) -> Vec<QuotaReport> {
        self.books
            .load()
            .iter()
            .map(|book| book.report(now, max_subjects))
            .collect()
    }
}

/// Refusals of one quota, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaRefusals {
    pub quota: String,
    pub refused: u64,
    pub would_refuse: u64,
}

/// One quota in `/stats` `quotas`.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaReport {
    pub name: String,
    pub mode: &'static str,
    /// `null` for a quota that limits only concurrency.
    pub window: Option<String>,
    pub timezone: String,
    pub limits: LimitsReport,
    pub refused: u64,
    pub would_refuse: u64,
    /// Requests counted under `"(other)"` because the quota's subject table was full.
    pub folded: u64,
    /// Subjects kept; `subjects` lists at most the report's bound of them.
    pub subjects_total: usize,
    pub subjects: Vec<SubjectReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitsReport {
    pub usd: Option<f64>,
    pub tokens: Option<u64>,
    pub requests: Option<u64>,
    pub concurrent: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubjectReport {
    pub subject: String,
    pub used: UsedReport,
    /// What is left under each limit that is set (never below 0).
    pub remaining: LimitsReport,
    /// When the window ends (RFC 3339, UTC); `null` for rolling windows, a 5-hour block not
    /// started, and concurrency-only quotas.
    pub resets_at: Option<String>,
    pub refused: u64,
    pub would_refuse: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsedReport {
    pub usd: f64,
    pub tokens: u64,
    pub requests: u64,
    pub in_flight: u64,
}

impl QuotaBook {
    fn report(&self, now: Timestamp, max_subjects: usize) -> QuotaReport {
        let quota = &self.quota;
        let limits = quota.limits;
        let subjects = self.shared.lock();
        // Under the lock only what ranking needs; rows are built for the listed few after.
        let mut ranked: Vec<(f64, &String, &Entry, Option<Standing>)> = subjects
            .map
            .iter()
            .map(|(key, entry)| {
                let standing = quota
                    .window
                    .map(|window| entry.tally.standing(window, &quota.timezone, now));
                let spent = standing.map(|s| s.spent).unwrap_or_default();
                let fraction = |used: u64, limit: Option<u64>| {
                    limit.map_or(0.0, |limit| used as f64 / limit.max(1) as f64)
                };
                let nearest = [
                    fraction(spent.usd_nanos, limits.usd_nanos),
                    fraction(spent.tokens, limits.tokens),
                    fraction(spent.requests, limits.requests),
                    fraction(entry.in_flight, limits.concurrent),
                ]
                .into_iter()
                .fold(0.0, f64::max);
                (nearest, key, entry, standing)
            })
            .collect();
        let subjects_total = ranked.len();
        ranked.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        ranked.truncate(max_subjects);
        let rows = ranked
            .into_iter()
            .map(|(_, key, entry, standing)| {
                let spent = standing.map(|s| s.spent).unwrap_or_default();
                SubjectReport {
                    subject: display_subject(key).into_owned(),
                    used: UsedReport {
                        usd: round_usd(spent.usd()),
                        tokens: spent.tokens,
                        requests: spent.requests,
                        in_flight: entry.in_flight,
                    },
                    remaining: LimitsReport {
                        usd: limits
                            .usd_nanos
                            .map(|l| round_usd(l.saturating_sub(spent.usd_nanos) as f64 / 1e9)),
                        tokens: limits.tokens.map(|l| l.saturating_sub(spent.tokens)),
                        requests: limits.requests.map(|l| l.saturating_sub(spent.requests)),
                        concurrent: limits.concurrent.map(|l| l.saturating_sub(entry.in_flight)),
                    },
                    resets_at: standing.and_then(|s| s.resets_at).map(decision::rfc3339),
                    refused: entry.refused,
                    would_refuse: entry.would_refuse,
                }
            })
            .collect();
        drop(subjects);
        QuotaReport {
            name: quota.name.clone(),
            mode: quota.mode.as_str(),
            window: quota.window.map(|w| w.to_string()),
            timezone: quota.timezone_name.clone(),
            limits: LimitsReport {
                usd: limits.usd_nanos.map(|n| round_usd(n as f64 / 1e9)),
                tokens: limits.tokens,
                requests: limits.requests,
                concurrent: limits.concurrent,
            },
            refused: self.shared.refused.load(Ordering::Relaxed),
            would_refuse: self.shared.would_refuse.load(Ordering::Relaxed),
            folded: self.shared.folded.load(Ordering::Relaxed),
            subjects_total,
            subjects: rows,
        }
    }
}

/// Rounded to 1e-9 for display, as every cost sluice shows.
fn round_usd(usd: f64) -> f64 {
    (usd * 1e9).round() / 1e9
}
