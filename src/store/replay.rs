//! Spend kept in the store, fed to the quota ledger: at start, the rows of every open quota
//! window (so that a restart forgets nothing); on a shared PostgreSQL store, other instances'
//! rows as they are committed (so that a fleet shares its quotas).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::db::{Cell, Col, Db, Param};
use super::{StoreError, StoreHandle, StoreRow, Text};
use crate::quotas::{spent_of, timestamp, Ledger, RequestSubjects};
use crate::usage::Usage;

/// The longest quota window is a calendar month: rows older than this cannot count.
pub const REPLAY_SPAN: Duration = Duration::from_secs(32 * 86_400);
/// Rows read per query.
const PAGE: usize = 5_000;
/// How often other instances' rows are read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Rows are numbered when inserted but may be committed out of order: ids seen less than this
/// long ago are remembered, and anything above the oldest of them is read again.
const RESCAN: Duration = Duration::from_secs(5);

/// A stored row, numbered.
pub struct Numbered {
    pub id: i64,
    pub row: StoreRow,
}

const COLUMNS: [(&str, Col); 14] = [
    ("id", Col::Int),
    ("finished_ms", Col::Int),
    ("instance", Col::Text),
    ("route", Col::Text),
    ("model", Col::Text),
    ("source", Col::Text),
    ("caller", Col::Text),
    ("project", Col::Text),
    ("provider", Col::Text),
    ("client", Col::Text),
    ("input_tokens", Col::Int),
    ("output_tokens", Col::Int),
    (
        "cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens",
        Col::Int,
    ),
    ("cost_usd", Col::Real),
];

/// Rows numbered above `after_id` that finished at or after `since_ms`, in id order, at most
/// `limit`; without those written by `skip_instance`.
pub(crate) fn rows_after(
    db: &mut Db,
    after_id: i64,
    since_ms: i64,
    skip_instance: Option<&str>,
    limit: usize,
) -> Result<Vec<Numbered>, String> {
    let names: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
    let cols: Vec<Col> = COLUMNS.iter().map(|(_, col)| *col).collect();
    let mut sql = format!(
        "SELECT {} FROM requests WHERE id > ? AND finished_ms >= ?",
        names.join(", ")
    );
    let mut params = vec![Param::Int(after_id), Param::Int(since_ms)];
    if let Some(instance) = skip_instance {
        sql.push_str(" AND instance <> ?");
        params.push(Param::Text(instance.to_string()));
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
    Ok(db
        .select(&sql, &params, &cols)?
        .into_iter()
        .map(|cells| {
            let mut cells = cells.into_iter();
            let mut next = || cells.next().unwrap_or(Cell::Int(0));
            let id = next().int();
            let finished_ms = next().int();
            let [instance, route, model, source, caller, project, provider, client] =
                std::array::from_fn(|_| Text::from(next().into_text()));
            let count = |cell: Cell| u64::try_from(cell.int()).unwrap_or(0);
            let input_tokens = count(next());
            let output_tokens = count(next());
            let cache_tokens = count(next());
            let cost_usd = next().real();
            Numbered {
                id,
                row: StoreRow {
                    finished_ms,
                    instance,
                    route,
                    model,
                    source,
                    caller,
                    project,
                    provider,
                    client,
                    input_tokens,
                    output_tokens,
                    // All cache tokens in one column: quotas count them together.
                    cache_read_tokens: cache_tokens,
                    cost_usd,
                    ..StoreRow::default()
                },
            }
        })
        .collect())
}

/// Charges one stored request to the ledger: its request, tokens and cost.
pub fn charge_row(ledger: &Ledger, row: &StoreRow) {
    let text = |s: &str| Some(s).filter(|s| !s.is_empty()).map(str::to_owned);
    let [caller, route, model, source, project, provider, client] = [
        &row.caller,
        &row.route,
        &row.model,
        &row.source,
        &row.project,
        &row.provider,
        &row.client,
    ]
    .map(|value| text(value));
    let subjects = RequestSubjects {
        caller: caller.as_deref(),
        route: route.as_deref(),
        model: model.as_deref(),
        source: source.as_deref(),
        project: project.as_deref(),
        provider: provider.as_deref(),
        client: client.as_deref(),
    };
    let usage = Usage {
        input_tokens: row.input_tokens,
        output_tokens: row.output_tokens,
        cache_read_input_tokens: row.cache_read_tokens,
        ..Usage::default()
    };
    let mut spent = spent_of(Some(row.cost_usd), &usage);
    spent.requests = 1;
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(row.finished_ms.max(0) as u64);
    ledger.charge(&subjects, spent, timestamp(at));
}

/// At start: charges every stored row that may still count against a quota. Returns how many
/// rows were charged and the highest id read (where polling other instances starts).
pub fn replay(
    store: &StoreHandle,
    ledger: &Ledger,
    now: SystemTime,
) -> Result<(u64, i64), StoreError> {
    let since_ms = super::unix_ms(now - REPLAY_SPAN);
    let (mut charged, mut last_id) = (0, 0);
    loop {
        let rows = store.rows_after(last_id, since_ms, None, PAGE)?;
        for numbered in &rows {
            charge_row(ledger, &numbered.row);
            last_id = last_id.max(numbered.id);
        }
        charged += rows.len() as u64;
        if rows.len() < PAGE {
            return Ok((charged, last_id));
        }
    }
}

/// Other instances' rows on a shared store, read every [`POLL_INTERVAL`] after `after_id` and
/// charged to the ledger, each once, until the store is closed.
pub fn poll_other_instances(
    store: StoreHandle,
    ledger: Arc<Ledger>,
    instance: String,
    after_id: i64,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sluice-fleet".into())
        .spawn(move || {
            crate::service::run_as_background();
            let mut poller = Poller::new(after_id);
            while !store.is_closed() {
                let now = Instant::now();
                if let Err(err) = poller.poll(&store, &ledger, &instance, now) {
                    tracing::warn!("cannot read other instances' rows: {err}");
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        })
}

/// Which rows were charged already.
struct Poller {
    /// Every row at or below this id was charged or skipped.
    floor: i64,
    /// Ids above `floor` charged, with when they were first seen.
    seen: BTreeMap<i64, Instant>,
}

impl Poller {
    fn new(floor: i64) -> Self {
        Self {
            floor,
            seen: BTreeMap::new(),
        }
    }

    fn poll(
        &mut self,
        store: &StoreHandle,
        ledger: &Ledger,
        instance: &str,
        now: Instant,
    ) -> Result<(), StoreError> {
        let since_ms = super::unix_ms(SystemTime::now() - REPLAY_SPAN);
        let mut after = self.floor;
        loop {
            let rows = store.rows_after(after, since_ms, Some(instance), PAGE)?;
            for numbered in &rows {
                after = after.max(numbered.id);
                if self.seen.insert(numbered.id, now).is_none() {
                    charge_row(ledger, &numbered.row);
                }
            }
            if rows.len() < PAGE {
                break;
            }
        }
        // Ids seen long enough ago cannot be joined by an earlier id any more: forget them.
        while let Some((&id, &seen_at)) = self.seen.first_key_value() {
            if now.duration_since(seen_at) < RESCAN {
                break;
            }
            self.floor = id;
            self.seen.pop_first();
        }
        Ok(())
    }
}
