//! Importing a `[stats] state_file` once: its minute buckets (and the part of its lifetime
//! counters older than them) become rollup rows, its rate-limit states the stored ones, then the
//! file is renamed `<name>.imported`.
//!
//! The file holds, per minute, each group's counters on their own (per route, model, source,
//! credential, caller, project, session, agent; requests per status), never how they combine.
//! Each of those is imported exactly, every counter: totals, any one group (and its keys' most
//! recent activity, to the minute) read back as the file had them. What the file never held
//! cannot be: which caller used which model, say. Rollup rows need a key in every column, so the
//! import lays each group's keys side by side over the bucket's amount, counter by counter, and
//! cuts it where any key changes: every group sums right, but a query combining two columns
//! (`group_by=model,caller`, or a filter on one and a grouping by another) over imported time
//! pairs keys as they happened to line up, not as requests did. Tokens and cost per status are
//! not in the file: they count under status 0, only requests per status are known. Also lost:
//! minute resolution (rows land in 15-minute buckets), raw rows (so `/usage` groupings by
//! session or agent, which read raw rows, do not show imported time; `/stats` does), and the
//! unpriced-model list (counted afresh since start).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::db::{Db, Pacing, Param, Rollups, Target, BUCKET_MS};
use super::{unix_ms, Counters, StoreError};
use crate::metrics::counters::Amount;
use crate::metrics::stats::RateLimitState;

/// The state file's format (version 1), read leniently.
#[derive(Deserialize)]
struct OnDisk {
    version: u32,
    book: Book,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Book {
    counting_since: String,
    lifetime: Groups,
    minutes: BTreeMap<i64, Groups>,
    rate_limits: BTreeMap<String, RateLimitState>,
    /// Recency of the kept sessions, agents and projects: a larger number is more recent.
    session_seen: BTreeMap<String, u64>,
    agent_seen: BTreeMap<String, u64>,
    project_seen: BTreeMap<String, u64>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Groups {
    totals: Counters,
    by_route: BTreeMap<String, Counters>,
    by_model: BTreeMap<String, Counters>,
    by_source: BTreeMap<String, Counters>,
    by_credential: BTreeMap<String, Counters>,
    by_caller: BTreeMap<String, Counters>,
    by_project: BTreeMap<String, Counters>,
    by_session: BTreeMap<String, Counters>,
    by_agent: BTreeMap<String, Counters>,
    by_status: BTreeMap<String, u64>,
}

/// The rollups' key columns the file has a group for, in rollup order.
const JOINT: usize = 6;
/// Indexes into [`Marginals::groups`] beyond the joint ones.
const SESSION: usize = JOINT;
const AGENT: usize = JOINT + 1;

/// The same groups as plain counters, for arithmetic.
#[derive(Default, Clone)]
struct Marginals {
    totals: Counters,
    /// route, model, source, credential, caller, project, session, agent: key → counters.
    groups: [BTreeMap<String, Counters>; JOINT + 2],
    status: BTreeMap<i64, u64>,
}

impl Marginals {
    fn of(groups: &Groups) -> Marginals {
        let mut status = BTreeMap::new();
        for (key, n) in &groups.by_status {
            let entry: &mut u64 = status.entry(key.parse().unwrap_or(0)).or_default();
            *entry = entry.saturating_add(*n);
        }
        Marginals {
            totals: groups.totals,
            groups: [
                groups.by_route.clone(),
                groups.by_model.clone(),
                groups.by_source.clone(),
                groups.by_credential.clone(),
                groups.by_caller.clone(),
                groups.by_project.clone(),
                groups.by_session.clone(),
                groups.by_agent.clone(),
            ],
            status,
        }
    }

    fn merge(&mut self, other: &Marginals) {
        self.totals.merge(&other.totals);
        for (mine, theirs) in self.groups.iter_mut().zip(&other.groups) {
            for (k, c) in theirs {
                mine.entry(k.clone()).or_default().merge(c);
            }
        }
        for (k, n) in &other.status {
            let entry = self.status.entry(*k).or_default();
            *entry = entry.saturating_add(*n);
        }
    }

    /// What `self` has beyond `part` (saturating at zero; keys left with nothing dropped).
    fn minus(&self, part: &Marginals) -> Marginals {
        let mut out = self.clone();
        out.totals = Counters::saturating_sub(&self.totals, &part.totals);
        for (mine, theirs) in out.groups.iter_mut().zip(&part.groups) {
            for (k, c) in theirs {
                if let Some(entry) = mine.get_mut(k) {
                    *entry = Counters::saturating_sub(entry, c);
                }
            }
            mine.retain(|_, c| *c != Counters::default());
        }
        for (k, n) in &part.status {
            if let Some(entry) = out.status.get_mut(k) {
                *entry = entry.saturating_sub(*n);
            }
        }
        out.status.retain(|_, n| *n > 0);
        out
    }
}

/// A counter's value, for laying amounts side by side.
trait Span: Copy + PartialOrd + Default {
    fn plus(self, other: Self) -> Self;
    fn minus(self, other: Self) -> Self;
    /// Too small to be a piece of its own (float rounding).
    fn negligible(self) -> bool;
}

impl Span for u64 {
    fn plus(self, other: u64) -> u64 {
        self.saturating_add(other)
    }
    fn minus(self, other: u64) -> u64 {
        self.saturating_sub(other)
    }
    fn negligible(self) -> bool {
        self == 0
    }
}

impl Span for f64 {
    fn plus(self, other: f64) -> f64 {
        self + other
    }
    fn minus(self, other: f64) -> f64 {
        (self - other).max(0.0)
    }
    fn negligible(self) -> bool {
        self.is_nan() || self <= 1e-12
    }
}

/// Cuts `[0, total)` into pieces on which every group has one key: each group's keys take
/// consecutive spans of their amounts, in key order (what they leave uncovered goes to no key,
/// `""`), and a piece ends wherever any group's key changes. Each group's keys get their amounts
/// exactly (up to `total`).
fn cut<T: Span>(groups: &[Vec<(String, T)>], total: T) -> Vec<(Vec<String>, T)> {
    if total.negligible() {
        return Vec::new();
    }
    let layouts: Vec<Vec<(String, T)>> = groups
        .iter()
        .map(|amounts| {
            let mut ends = Vec::new();
            let mut at = T::default();
            for (key, amount) in amounts {
                let end = match at.plus(*amount) {
                    end if end < total => end,
                    _ => total,
                };
                if end.minus(at).negligible() {
                    continue;
                }
                ends.push((key.clone(), end));
                at = end;
                if at >= total {
                    break;
                }
            }
            if total.minus(at).negligible() {
                if let Some(last) = ends.last_mut() {
                    last.1 = total;
                }
            }
            if ends.last().map_or(true, |(_, end)| *end < total) {
                ends.push((String::new(), total));
            }
            ends
        })
        .collect();
    let mut cursors = vec![0usize; layouts.len()];
    let mut pieces = Vec::new();
    let mut at = T::default();
    while at < total {
        let mut end = total;
        for (layout, cursor) in layouts.iter().zip(&cursors) {
            if layout[*cursor].1 < end {
                end = layout[*cursor].1;
            }
        }
        let keys = layouts
            .iter()
            .zip(&cursors)
            .map(|(layout, cursor)| layout[*cursor].0.clone())
            .collect();
        pieces.push((keys, end.minus(at)));
        at = end;
        for (layout, cursor) in layouts.iter().zip(cursors.iter_mut()) {
            while *cursor + 1 < layout.len() && at >= layout[*cursor].1 {
                *cursor += 1;
            }
        }
    }
    pieces
}

/// Counters with `amount` in field `field` only.
fn only(field: usize, amount: Amount) -> Counters {
    let mut amounts = Counters::default().amounts();
    amounts[field] = amount;
    Counters::from_amounts(amounts)
}

/// Adds rollups whose every group sums to `m` (see the module docs). `last_ms` gives the time a
/// key of group `g` was last active. Returns the requests added.
fn allocate(
    bucket: i64,
    m: &Marginals,
    last_ms: impl Fn(usize, &str) -> i64,
    rollups: &mut Rollups,
) -> u64 {
    for (field, total) in m.totals.amounts().into_iter().enumerate() {
        let requests = field == 0;
        let mut add = |keys: &[String], amount: Amount| {
            let status = if requests {
                keys[JOINT].parse().unwrap_or(0)
            } else {
                0
            };
            let joint: [String; JOINT] = std::array::from_fn(|i| keys[i].clone());
            rollups.add_usage(bucket, joint, status, &only(field, amount));
        };
        match total {
            Amount::Count(total) => {
                let mut groups: Vec<Vec<(String, u64)>> = m.groups[..JOINT]
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|(k, c)| (k.clone(), count(c, field)))
                            .collect()
                    })
                    .collect();
                // Only requests are known per status.
                groups.push(if requests {
                    m.status.iter().map(|(k, n)| (k.to_string(), *n)).collect()
                } else {
                    Vec::new()
                });
                for (keys, amount) in cut(&groups, total) {
                    add(&keys, Amount::Count(amount));
                }
            }
            Amount::Usd(total) => {
                let groups: Vec<Vec<(String, f64)>> = m.groups[..JOINT]
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|(k, c)| (k.clone(), c.amounts()[field].as_f64()))
                            .collect()
                    })
                    .chain(std::iter::once(Vec::new()))
                    .collect();
                for (keys, amount) in cut(&groups, total) {
                    add(&keys, Amount::Usd(amount));
                }
            }
        }
    }
    // The groups kept with their most recent activity, each key exactly.
    for (index, dimension) in [(3, "credential"), (5, "project"), (AGENT, "agent")] {
        for (key, counters) in &m.groups[index] {
            rollups.add_recent(bucket, dimension, key, last_ms(index, key), counters);
        }
    }
    for (key, counters) in &m.groups[SESSION] {
        rollups.add_session(bucket, key, last_ms(SESSION, key), counters);
    }
    m.totals.requests
}

fn count(counters: &Counters, field: usize) -> u64 {
    match counters.amounts()[field] {
        Amount::Count(n) => n,
        Amount::Usd(_) => 0,
    }
}

/// The order in which a bucket's keys were last active, as the file's recency numbers give it:
/// within one minute, the key seen last gets the latest millisecond.
struct Ranks(BTreeMap<usize, BTreeMap<String, i64>>);

impl Ranks {
    fn of(m: &Marginals, book: &Book) -> Ranks {
        let no_order = BTreeMap::new();
        let mut ranks = BTreeMap::new();
        for (group, seen) in [
            (3, &no_order),
            (5, &book.project_seen),
            (SESSION, &book.session_seen),
            (AGENT, &book.agent_seen),
        ] {
            let mut keys: Vec<&String> = m.groups[group].keys().collect();
            keys.sort_by_key(|k| (seen.get(*k).copied().unwrap_or(0), (*k).clone()));
            let order = keys
                .into_iter()
                .enumerate()
                .map(|(i, k)| (k.clone(), (i as i64).min(59_999)))
                .collect();
            ranks.insert(group, order);
        }
        Ranks(ranks)
    }

    fn last_ms(&self, start_ms: i64, group: usize, key: &str) -> i64 {
        let rank = self.0.get(&group).and_then(|o| o.get(key)).copied();
        start_ms.saturating_add(rank.unwrap_or(0))
    }
}

/// The file's rate-limit states as the store keeps them (when seen, and the state's JSON).
fn rate_limit_states(book: &Book) -> Vec<(String, super::rate_limits::StoredState)> {
    let mut states: Vec<_> = book
        .rate_limits
        .iter()
        .filter_map(|(credential, state)| {
            let seen = state
                .seen_at
                .parse::<jiff::Timestamp>()
                .ok()?
                .as_millisecond();
            Some((
                credential.clone(),
                (seen, serde_json::to_string(state).ok()?),
            ))
        })
        .collect();
    states.sort_by_key(|(_, (seen, _))| *seen);
    let keep = states.len().saturating_sub(super::MAX_RATE_LIMITS);
    states.split_off(keep)
}

/// What an import did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    /// Requests the imported rows stand for.
    pub requests: u64,
    /// Where the state file was moved.
    pub renamed_to: PathBuf,
    /// The file had been imported before (its rename had failed): nothing was added.
    pub already_imported: bool,
}

/// Imports the state file at `path` into the store at `target`, once, and renames it
/// `<name>.imported`. `Ok(None)`: there is no such file. A file that cannot be read is left as it
/// is and reported.
pub fn import_state_file(
    target: &Target,
    path: &Path,
) -> Result<Option<ImportSummary>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(StoreError::Import(format!("{}: {err}", path.display()))),
    };
    let file: OnDisk = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Import(format!("{}: {e}; it is left as it is", path.display())))?;
    if file.version != 1 {
        return Err(StoreError::Import(format!(
            "{}: unknown format version {}; it is left as it is",
            path.display(),
            file.version
        )));
    }
    let digest = hex::encode(Sha256::digest(&bytes));
    let mut db = Db::open(target, true)?;
    let done = db
        .select(
            "SELECT COUNT(*) FROM store_imports WHERE digest = ?",
            &[Param::Text(digest.clone())],
            &[super::db::Col::Int],
        )
        .map_err(StoreError::Database)?;
    let already_imported = done.first().is_some_and(|r| r[0].int() > 0);

    let mut requests = 0;
    if !already_imported {
        let book = &file.book;
        let mut rollups = Rollups::default();
        let mut in_minutes = Marginals::default();
        let minute_bucket = |minute: i64| (minute * 60_000).div_euclid(BUCKET_MS);
        for (minute, groups) in &book.minutes {
            let m = Marginals::of(groups);
            let ranks = Ranks::of(&m, book);
            let at = minute.saturating_mul(60_000);
            requests += allocate(
                minute_bucket(*minute),
                &m,
                |g, key| ranks.last_ms(at, g, key),
                &mut rollups,
            );
            in_minutes.merge(&m);
        }
        // Lifetime counters older than the minute buckets: at the time counting began (else just
        // before the first bucket).
        let older = Marginals::of(&book.lifetime).minus(&in_minutes);
        let older_at = book
            .counting_since
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond().div_euclid(BUCKET_MS))
            .ok()
            .or_else(|| book.minutes.keys().next().map(|m| minute_bucket(*m) - 1))
            .unwrap_or_else(|| unix_ms(SystemTime::now()).div_euclid(BUCKET_MS));
        let ranks = Ranks::of(&older, book);
        requests += allocate(
            older_at,
            &older,
            |g, key| ranks.last_ms(older_at * BUCKET_MS, g, key),
            &mut rollups,
        );
        let mut statements = vec![(
            "INSERT INTO store_imports (digest, file, imported_ms) VALUES (?, ?, ?)".to_string(),
            vec![
                Param::Text(digest),
                Param::Text(path.display().to_string()),
                Param::Int(unix_ms(SystemTime::now())),
            ],
        )];
        statements.extend(super::rate_limits::statements(&rate_limit_states(book)));
        db.write_with(&[], &rollups, statements, &mut Pacing::off())
            .map_err(StoreError::Database)?;
    }
    let renamed_to = PathBuf::from(format!("{}.imported", path.display()));
    std::fs::rename(path, &renamed_to).map_err(|e| {
        StoreError::Import(format!(
            "{} was imported but could not be renamed to {}: {e}",
            path.display(),
            renamed_to.display()
        ))
    })?;
    Ok(Some(ImportSummary {
        requests,
        renamed_to,
        already_imported,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group<T: Copy>(pairs: &[(&str, T)]) -> Vec<(String, T)> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn every_group_gets_its_amounts_and_the_rest_goes_to_no_key() {
        let groups = vec![
            group(&[("a", 2u64), ("b", 3)]),
            group(&[("x", 6u64)]),
            group(&[("p", 1u64), ("q", 100)]),
        ];
        let pieces = cut(&groups, 7);
        assert_eq!(pieces.iter().map(|p| p.1).sum::<u64>(), 7);
        for (g, expected) in [
            (0, vec![("a", 2), ("b", 3), ("", 2)]),
            (1, vec![("x", 6), ("", 1)]),
            (2, vec![("p", 1), ("q", 6)]),
        ] {
            let mut sums: BTreeMap<String, u64> = BTreeMap::new();
            for (keys, amount) in &pieces {
                *sums.entry(keys[g].clone()).or_default() += amount;
            }
            let expected: BTreeMap<String, u64> = expected
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(sums, expected, "group {g}");
        }
        assert!(cut(&groups, 0).is_empty());
    }

    #[test]
    fn costs_are_cut_without_slivers() {
        let groups = vec![group(&[("a", 0.1f64), ("b", 0.2)])];
        let pieces = cut(&groups, 0.3);
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        let total: f64 = pieces.iter().map(|p| p.1).sum();
        assert!((total - 0.3).abs() < 1e-12);
    }
}
