//! The latest rate-limit state per credential, kept in the store so that a restart (or another
//! sluice on the same PostgreSQL database) starts with what was last seen instead of nothing.
//!
//! The request path never waits for it: states are coalesced in memory (the newest per
//! credential, at most [`MAX_RATE_LIMITS`]) and a thread of its own, on a connection of its own,
//! writes them once a second. The table keeps the [`MAX_RATE_LIMITS`] credentials seen last.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::db::{Cell, Col, Db, Pacing, Param, Rollups};
use super::{StoreError, Target};
use crate::metrics::stats::{Recent, MAX_RECENT_KEYS};

/// How many credentials' states are kept (as `/stats` `rate_limits` keeps).
pub const MAX_RATE_LIMITS: usize = MAX_RECENT_KEYS;
/// How often waiting states are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Longest state kept (the headers of one answer; more is not a rate-limit state).
const MAX_STATE_BYTES: usize = 16 * 1024;

/// One credential's state as stored: when it was seen (unix ms) and its JSON.
pub type StoredState = (i64, String);

#[derive(Default)]
struct Pending {
    states: Option<Recent<StoredState>>,
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes rate-limit states to the store. Cheap to clone; [`close`](Self::close) writes what
/// waits and stops the thread.
#[derive(Clone)]
pub struct RateLimitLog {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl RateLimitLog {
    /// Starts the writing thread on a connection of its own to `target` (already migrated by
    /// [`super::open`]).
    pub fn start(target: &Target) -> Result<RateLimitLog, StoreError> {
        let mut db = Db::open(target, false)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            let target = target.clone();
            std::thread::Builder::new()
                .name("sluice-ratelimits".into())
                .spawn(move || {
                    crate::service::run_as_background();
                    run(&shared, &target, &mut db)
                })
                .map_err(|e| StoreError::Database(format!("cannot start a thread: {e}")))?
        };
        Ok(RateLimitLog {
            shared,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Queues `credential`'s latest state (never blocks on the database).
    pub fn set(&self, credential: &str, seen_ms: i64, state: String) {
        if state.len() > MAX_STATE_BYTES {
            return;
        }
        let mut pending = lock(&self.shared.pending);
        pending
            .states
            .get_or_insert_with(|| Recent::new(MAX_RATE_LIMITS))
            .set(credential, (seen_ms, state));
    }

    /// Writes what waits, then stops.
    pub fn close(&self) {
        lock(&self.shared.pending).closing = true;
        self.shared.wake.notify_all();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, target: &Target, db: &mut Db) {
    let mut failing = false;
    loop {
        let (states, closing) = {
            let pending = lock(&shared.pending);
            let (mut pending, _) = shared
                .wake
                .wait_timeout_while(pending, FLUSH_EVERY, |p| !p.closing)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (pending.states.take(), pending.closing)
        };
        if let Some(states) = states {
            let mut states: Vec<(String, StoredState)> = states.to_map().into_iter().collect();
            // Oldest first, so that re-queued states keep their order.
            states.sort_by_key(|(_, (seen, _))| *seen);
            match write(db, &states).or_else(|_| {
                // The connection may be gone (server restarted): once more on a new one.
                *db = Db::open(target, false).map_err(|e| e.to_string())?;
                write(db, &states)
            }) {
                Ok(()) => failing = false,
                Err(err) => {
                    if !failing {
                        tracing::warn!("store: rate-limit states not written (retrying): {err}");
                    }
                    failing = true;
                    // Newer states queued meanwhile win over these.
                    let mut pending = lock(&shared.pending);
                    let newer = pending.states.take();
                    let merged = pending
                        .states
                        .get_or_insert_with(|| Recent::new(MAX_RATE_LIMITS));
                    for (credential, state) in states {
                        merged.set(&credential, state);
                    }
                    if let Some(newer) = newer {
                        let mut newer: Vec<_> = newer.to_map().into_iter().collect();
                        newer.sort_by_key(|(_, (seen, _))| *seen);
                        for (credential, state) in newer {
                            merged.set(&credential, state);
                        }
                    }
                }
            }
        }
        if closing {
            return;
        }
    }
}

/// Upserts `states` (a later `seen_ms` wins, so that two sluices never step back in time) and
/// keeps the newest [`MAX_RATE_LIMITS`], in one transaction.
fn write(db: &mut Db, states: &[(String, StoredState)]) -> Result<(), String> {
    db.write_with(
        &[],
        &Rollups::default(),
        statements(states),
        &mut Pacing::off(),
    )
}

/// The statements of [`write`], for a transaction that does more.
pub(super) fn statements(states: &[(String, StoredState)]) -> Vec<(String, Vec<Param>)> {
    let mut statements = Vec::new();
    for chunk in states.chunks(100) {
        let values = vec!["(?, ?, ?)"; chunk.len()].join(", ");
        let params = chunk
            .iter()
            .flat_map(|(credential, (seen, state))| {
                [
                    Param::Text(credential.clone()),
                    Param::Int(*seen),
                    Param::Text(state.clone()),
                ]
            })
            .collect();
        statements.push((
            format!(
                "INSERT INTO rate_limits (credential, seen_ms, state) VALUES {values} \
                 ON CONFLICT (credential) DO UPDATE SET seen_ms = excluded.seen_ms, \
                 state = excluded.state WHERE excluded.seen_ms >= rate_limits.seen_ms"
            ),
            params,
        ));
    }
    statements.push((
        format!(
            "DELETE FROM rate_limits WHERE credential NOT IN (SELECT credential FROM \
             (SELECT credential FROM rate_limits ORDER BY seen_ms DESC, credential \
             LIMIT {MAX_RATE_LIMITS}) AS kept)"
        ),
        Vec::new(),
    ));
    statements
}

/// The stored states, oldest first (at most [`MAX_RATE_LIMITS`]): `(credential, seen_ms, JSON)`.
pub fn load(target: &Target) -> Result<Vec<(String, StoredState)>, StoreError> {
    let mut db = Db::open(target, false)?;
    let rows = db
        .select(
            &format!(
                "SELECT credential, seen_ms, state FROM rate_limits \
                 ORDER BY seen_ms DESC, credential LIMIT {MAX_RATE_LIMITS}"
            ),
            &[],
            &[Col::Text, Col::Int, Col::Text],
        )
        .map_err(StoreError::Database)?;
    let mut states: Vec<(String, StoredState)> = rows
        .into_iter()
        .map(|row| {
            let mut cells = row.into_iter();
            let mut next = || cells.next().unwrap_or(Cell::Int(0));
            let credential = next().into_text();
            let seen = next().int();
            (credential, (seen, next().into_text()))
        })
        .collect();
    states.reverse();
    Ok(states)
}
