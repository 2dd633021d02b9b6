//! Importing a `[stats] state_file` once: its minute buckets (and the part of its lifetime
//! counters older than them) become rollup rows, then the file is renamed `<name>.imported`.
//!
//! The file holds, per minute, each group's counters separately (per model, per caller, …), not
//! how they combine. The import lays every group's requests side by side and cuts them into
//! rows that carry one key of each group: every group's request count per bucket is kept
//! exactly, and tokens and cost are split from the per-model counters, so that per-model (and
//! total) tokens and cost are kept exactly too; tokens and cost per caller, credential, route
//! or source are proportional estimates. Lost: minute resolution (rows land in 15-minute
//! buckets), sessions, rate-limit state and the unpriced-model list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::db::{Db, Param, Rollups, Target, BUCKET_MS};
use super::{unix_ms, Counters, StoreError};
use crate::metrics::counters::Amount;

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
    by_status: BTreeMap<String, u64>,
}

/// The same groups as plain counters, for arithmetic.
#[derive(Default, Clone)]
struct Marginals {
    totals: Counters,
    /// route, model, source, credential, caller: key → counters.
    dims: [BTreeMap<String, Counters>; 5],
    status: BTreeMap<i64, u64>,
}

impl Marginals {
    fn of(groups: &Groups) -> Marginals {
        let map = |m: &BTreeMap<String, Counters>| {
            m.iter()
                .map(|(k, c)| (k.clone(), *c))
                .collect::<BTreeMap<_, _>>()
        };
        Marginals {
            totals: groups.totals,
            dims: [
                map(&groups.by_route),
                map(&groups.by_model),
                map(&groups.by_source),
                map(&groups.by_credential),
                map(&groups.by_caller),
            ],
            status: groups
                .by_status
                .iter()
                .map(|(k, n)| (k.parse().unwrap_or(0), *n))
                .fold(BTreeMap::new(), |mut m, (k, n)| {
                    *m.entry(k).or_insert(0u64) += n;
                    m
                }),
        }
    }

    fn merge(&mut self, other: &Marginals) {
        self.totals.merge(&other.totals);
        for (mine, theirs) in self.dims.iter_mut().zip(&other.dims) {
            for (k, c) in theirs {
                mine.entry(k.clone()).or_default().merge(c);
            }
        }
        for (k, n) in &other.status {
            *self.status.entry(*k).or_default() += n;
        }
    }

    /// What `self` has beyond `part` (saturating at zero).
    fn minus(&self, part: &Marginals) -> Marginals {
        let mut out = self.clone();
        out.totals = Counters::saturating_sub(&self.totals, &part.totals);
        for (mine, theirs) in out.dims.iter_mut().zip(&part.dims) {
            for (k, c) in theirs {
                if let Some(entry) = mine.get_mut(k) {
                    *entry = Counters::saturating_sub(entry, c);
                }
            }
        }
        for (k, n) in &part.status {
            if let Some(entry) = out.status.get_mut(k) {
                *entry = entry.saturating_sub(*n);
            }
        }
        out
    }
}

/// `value`'s share for positions `[from, to)` of `n`, such that consecutive shares add up to
/// `value` exactly.
fn share(value: u64, from: u64, to: u64, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let at = |pos: u64| (u128::from(value) * u128::from(pos) / u128::from(n)) as u64;
    at(to) - at(from)
}

/// Intervals of `[0, n)` per key, in key order; what the keys do not cover goes to `""`.
fn intervals<K: Clone + Default + Ord>(
    counts: impl Iterator<Item = (K, u64)>,
    n: u64,
) -> Vec<(K, u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for (key, count) in counts {
        let end = at.saturating_add(count).min(n);
        if end > at {
            out.push((key, at, end));
            at = end;
        }
    }
    if at < n {
        out.push((K::default(), at, n));
    }
    out
}

/// Adds rows to `rollups` whose per-group sums match `m` as described in the module docs.
fn allocate(bucket: i64, m: &Marginals, rollups: &mut Rollups) -> u64 {
    let n = m.totals.requests;
    if n == 0 {
        return 0;
    }
    let dims: Vec<Vec<(String, u64, u64)>> = m
        .dims
        .iter()
        .map(|map| intervals(map.iter().map(|(k, c)| (k.clone(), c.requests)), n))
        .collect();
    let status = intervals(m.status.iter().map(|(k, c)| (*k, *c)), n);
    // Per-model counters, with whatever the models do not cover under "".
    let model_counters = |key: &str| -> Counters {
        if let Some(c) = m.dims[1].get(key) {
            return *c;
        }
        let covered = m.dims[1].values().fold(Counters::default(), |mut acc, c| {
            acc.merge(c);
            acc
        });
        Counters::saturating_sub(&m.totals, &covered)
    };
    let mut cursors = vec![0usize; dims.len()];
    let mut status_cursor = 0usize;
    let mut at = 0u64;
    while at < n {
        let mut end = n;
        for (dim, cursor) in dims.iter().zip(&cursors) {
            end = end.min(dim[*cursor].2);
        }
        end = end.min(status[status_cursor].2);
        let (model, model_from, model_to) = &dims[1][cursors[1]];
        let source = model_counters(model);
        let span = model_to - model_from;
        let (from, to) = (at - model_from, end - model_from);
        let mut counters = Counters::from_amounts(source.amounts().map(|amount| match amount {
            Amount::Count(value) => Amount::Count(share(value, from, to, span)),
            Amount::Usd(usd) => Amount::Usd(usd * (to - from) as f64 / span as f64),
        }));
        counters.requests = end - at;
        let keys = [
            dims[0][cursors[0]].0.clone(),
            model.clone(),
            dims[2][cursors[2]].0.clone(),
            dims[3][cursors[3]].0.clone(),
            dims[4][cursors[4]].0.clone(),
            String::new(),
        ];
        // Imported credentials were last active somewhere in their bucket: its start.
        rollups.add_recent(
            bucket,
            "credential",
            &keys[3],
            bucket * BUCKET_MS,
            &counters,
        );
        rollups.add_usage(bucket, keys, status[status_cursor].0, &counters);
        at = end;
        for (dim, cursor) in dims.iter().zip(cursors.iter_mut()) {
            if dim[*cursor].2 == at && *cursor + 1 < dim.len() {
                *cursor += 1;
            }
        }
        if status[status_cursor].2 == at && status_cursor + 1 < status.len() {
            status_cursor += 1;
        }
    }
    n
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
        let mut rollups = Rollups::default();
        let mut in_minutes = Marginals::default();
        let minute_bucket = |minute: i64| (minute * 60_000).div_euclid(BUCKET_MS);
        for (minute, groups) in &file.book.minutes {
            let m = Marginals::of(groups);
            requests += allocate(minute_bucket(*minute), &m, &mut rollups);
            in_minutes.merge(&m);
        }
        // Lifetime counters older than the minute buckets: at the time counting began (else just
        // before the first bucket).
        let older = Marginals::of(&file.book.lifetime).minus(&in_minutes);
        let older_at = file
            .book
            .counting_since
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond().div_euclid(BUCKET_MS))
            .ok()
            .or_else(|| {
                file.book
                    .minutes
                    .keys()
                    .next()
                    .map(|m| minute_bucket(*m) - 1)
            })
            .unwrap_or_else(|| unix_ms(SystemTime::now()).div_euclid(BUCKET_MS));
        requests += allocate(older_at, &older, &mut rollups);
        let record = (
            "INSERT INTO store_imports (digest, file, imported_ms) VALUES (?, ?, ?)".to_string(),
            vec![
                Param::Text(digest),
                Param::Text(path.display().to_string()),
                Param::Int(unix_ms(SystemTime::now())),
            ],
        );
        db.write_with(&[], &rollups, vec![record])
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

    #[test]
    fn shares_add_up_exactly() {
        let n = 7;
        let total: u64 = (0..n).map(|i| share(1000, i, i + 1, n)).sum();
        assert_eq!(total, 1000);
        assert_eq!(share(u64::MAX, 0, 3, 3), u64::MAX);
    }

    #[test]
    fn intervals_give_the_rest_to_no_key() {
        let got = intervals([("a".to_string(), 2), ("b".to_string(), 3)].into_iter(), 7);
        assert_eq!(
            got,
            vec![
                ("a".into(), 0, 2),
                ("b".into(), 2, 5),
                (String::new(), 5, 7)
            ]
        );
    }
}
