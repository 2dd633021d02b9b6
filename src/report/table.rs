//! `/usage` answers drawn as ccusage-style tables: one line per period (or session, caller, …),
//! its models, token columns, cost, and a total line.

use std::collections::HashMap;

use comfy_table::presets::UTF8_FULL;
use comfy_table::{Attribute, Cell, CellAlignment, Color};
use comfy_table::{ColumnConstraint, ContentArrangement, Table};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{group_by, Breakdown, Dimension, ReportKind};

/// How the table is drawn: colour and terminal width only when stdout is a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableStyle {
    pub color: bool,
    /// Fit to this many columns; `None` on a terminal means "ask the terminal", elsewhere
    /// "as wide as the content".
    pub width: Option<u16>,
    terminal: bool,
    /// When set, the block that is still running says how long it has left.
    now: Option<time::OffsetDateTime>,
}

impl TableStyle {
    pub fn plain() -> Self {
        TableStyle {
            color: false,
            width: None,
            terminal: false,
            now: None,
        }
    }

    pub fn terminal() -> Self {
        TableStyle {
            color: true,
            width: None,
            terminal: true,
            now: None,
        }
    }

    /// Fit to `columns` whatever the output is.
    pub fn with_width(self, columns: u16) -> Self {
        TableStyle {
            width: Some(columns),
            ..self
        }
    }

    pub fn at(self, now: time::OffsetDateTime) -> Self {
        TableStyle {
            now: Some(now),
            ..self
        }
    }

    pub fn with_color(self) -> Self {
        TableStyle {
            color: true,
            ..self
        }
    }
}

/// The counters a table shows, as `/usage` names them.
pub use crate::metrics::Counters;

/// A `/usage` JSON answer: the rows keep their dimension columns as they came.
#[derive(Debug, Deserialize)]
pub struct UsageDoc {
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    pub rows: Vec<Map<String, Value>>,
    pub totals: Counters,
    /// `/usage` left rows out to keep to its row limit (the totals count them).
    #[serde(default)]
    pub truncated: bool,
}

impl UsageDoc {
    pub fn parse(body: &str) -> Result<UsageDoc, String> {
        serde_json::from_str(body).map_err(|err| err.to_string())
    }
}

struct Group {
    key: String,
    counters: Counters,
    parts: Vec<(String, Counters)>,
}

/// The value of a dimension column as people read it; requests without one (no session header,
/// no access key) show as "(none)".
/// Names come from clients: their control and bidi characters are shown escaped, never sent to
/// the terminal.
fn key_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) if !s.is_empty() => crate::printable::escape(s).into_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "(none)".to_string(),
    }
}

/// A block starts at a full hour: `2026-11-27T09:00:00+01:00` reads as `2026-11-27 09:00`
/// (the zone is the one the report asked for).
fn period_text(dimension: Dimension, key: &str) -> String {
    if dimension == Dimension::Block && key.len() >= 16 && key.as_bytes()[10] == b'T' {
        format!("{} {}", &key[..10], &key[11..16])
    } else {
        key.to_string()
    }
}

/// A subscription window lasts five hours from the start of its block.
const BLOCK: time::Duration = time::Duration::hours(5);

/// For the block still running at `now`: how long it has left, as `2 h 13 min`.
fn block_left(key: &str, now: time::OffsetDateTime) -> Option<String> {
    let start =
        time::OffsetDateTime::parse(key, &time::format_description::well_known::Rfc3339).ok()?;
    let left = start + BLOCK - now;
    if now < start || left <= time::Duration::ZERO {
        return None;
    }
    let minutes = (left.whole_seconds() + 59) / 60;
    Some(match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, m) => format!("{h} h {m} min"),
    })
}

fn by_cost_then_name(a: &(String, Counters), b: &(String, Counters)) -> std::cmp::Ordering {
    b.1.cost_usd
        .total_cmp(&a.1.cost_usd)
        .then(b.1.total_tokens().cmp(&a.1.total_tokens()))
        .then(a.0.cmp(&b.0))
}

fn groups(first: Dimension, second: Option<Dimension>, doc: &UsageDoc) -> Vec<Group> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for row in &doc.rows {
        let key = key_text(row.get(first.key()));
        let counters: Counters =
            serde_json::from_value(Value::Object(row.clone())).unwrap_or_default();
        let slot = *index.entry(key.clone()).or_insert_with(|| {
            groups.push(Group {
                key,
                counters: Counters::default(),
                parts: Vec::new(),
            });
            groups.len() - 1
        });
        let group = &mut groups[slot];
        group.counters.merge(&counters);
        if let Some(second) = second {
            let part = key_text(row.get(second.key()));
            match group.parts.iter_mut().find(|(name, _)| *name == part) {
                Some((_, sum)) => sum.merge(&counters),
                None => group.parts.push((part, counters)),
            }
        }
    }
    for group in &mut groups {
        group.parts.sort_by(by_cost_then_name);
    }
    if first.is_period() {
        groups.sort_by(|a, b| a.key.cmp(&b.key));
    } else {
        groups.sort_by(|a, b| {
            by_cost_then_name(&(a.key.clone(), a.counters), &(b.key.clone(), b.counters))
        });
    }
    groups
}

fn first_header(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::Day => "Date",
        Dimension::Week => "Week",
        Dimension::Month => "Month",
        Dimension::Block => "Block start",
        Dimension::Session => "Session",
        Dimension::Caller => "Caller",
        Dimension::Model => "Model",
        Dimension::Project => "Project",
        Dimension::Provider => "Provider",
        Dimension::Client => "Client",
    }
}

fn second_header(dimension: Dimension, one_per_line: bool) -> &'static str {
    match (dimension, one_per_line) {
        (Dimension::Caller, true) => "Caller",
        (Dimension::Caller, false) => "Callers",
        (Dimension::Project, true) => "Project",
        (Dimension::Project, false) => "Projects",
        (Dimension::Provider, true) => "Provider",
        (Dimension::Provider, false) => "Providers",
        (Dimension::Client, true) => "Client",
        (Dimension::Client, false) => "Clients",
        (_, true) => "Model",
        (_, false) => "Models",
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1234.5` → `$1,234.5000`: four decimals, because one request often costs less than a cent.
pub fn usd(amount: f64) -> String {
    let cents = (amount * 10_000.0).round();
    let sign = if cents < 0.0 { "-" } else { "" };
    let ten_thousandths = cents.abs() as u64;
    format!(
        "{sign}${}.{:04}",
        thousands(ten_thousandths / 10_000),
        ten_thousandths % 10_000
    )
}

fn number_cells(counters: &Counters) -> [String; 6] {
    [
        thousands(counters.input_tokens),
        thousands(counters.output_tokens),
        thousands(counters.cache_creation_input_tokens),
        thousands(counters.cache_read_input_tokens),
        thousands(counters.total_tokens()),
        usd(counters.cost_usd),
    ]
}

/// The report as text: a title, the table with a total line, and what the cost means.
pub fn render_table(
    kind: ReportKind,
    by: Option<Breakdown>,
    doc: &UsageDoc,
    style: TableStyle,
) -> String {
    let dimensions = group_by(kind, by);
    let first = dimensions[0];
    let second = dimensions.get(1).copied();
    let one_per_line = by.is_some();

    let mut title = format!("sluice usage by {}", first.key());
    if let Some(second) = second.filter(|_| one_per_line) {
        title.push_str(&format!(" and {}", second.key()));
    }
    let since = doc.since.as_deref().map(crate::printable::escape);
    let until = doc.until.as_deref().map(crate::printable::escape);
    match (since, until) {
        (Some(since), Some(until)) => title.push_str(&format!(", {since} to {until}")),
        (Some(since), None) => title.push_str(&format!(", since {since}")),
        (None, Some(until)) => title.push_str(&format!(", until {until}")),
        (None, None) => {}
    }
    if doc.rows.is_empty() {
        return format!(
            "{title}\nNo requests in this range. Widen it with --since, or check that clients \
             send their requests through this sluice."
        );
    }

    let header_cell = |text: &str| {
        let cell = Cell::new(text);
        if style.color {
            cell.fg(Color::Cyan)
        } else {
            cell
        }
    };
    let mut header = vec![header_cell(first_header(first))];
    if let Some(second) = second {
        header.push(header_cell(second_header(second, one_per_line)));
    }
    for name in [
        "Input",
        "Output",
        "Cache Write",
        "Cache Read",
        "Total Tokens",
        "Cost (USD)",
    ] {
        header.push(header_cell(name).set_alignment(CellAlignment::Right));
    }

    let mut table = Table::new();
    table
        .load_style(UTF8_FULL.with_rounded_corners())
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    if !style.terminal {
        table.force_no_tty();
    }
    if style.color {
        table.enforce_styling();
    }
    if let Some(width) = style.width {
        table.set_width(width);
    }

    let numbers = |counters: &Counters, emphasis: bool| {
        number_cells(counters).map(|text| {
            let cell = Cell::new(text).set_alignment(CellAlignment::Right);
            if emphasis && style.color {
                cell.fg(Color::Yellow).add_attribute(Attribute::Bold)
            } else {
                cell
            }
        })
    };
    for group in groups(first, second, doc) {
        let mut label = period_text(first, &group.key);
        if first == Dimension::Block {
            if let Some(left) = style.now.and_then(|now| block_left(&group.key, now)) {
                label.push_str(&format!("\nactive, {left} left"));
            }
        }
        match second {
            Some(_) if one_per_line => {
                for (i, (part, counters)) in group.parts.iter().enumerate() {
                    let mut row = vec![
                        Cell::new(if i == 0 { label.as_str() } else { "" }),
                        Cell::new(part),
                    ];
                    row.extend(numbers(counters, false));
                    table.add_row(row);
                }
            }
            Some(_) => {
                let names: Vec<String> = group
                    .parts
                    .iter()
                    .map(|(name, _)| format!("- {name}"))
                    .collect();
                let mut row = vec![Cell::new(label), Cell::new(names.join("\n"))];
                row.extend(numbers(&group.counters, false));
                table.add_row(row);
            }
            None => {
                let mut row = vec![Cell::new(label)];
                row.extend(numbers(&group.counters, false));
                table.add_row(row);
            }
        }
    }
    let total_label = |text: &str| {
        let cell = Cell::new(text);
        if style.color {
            cell.fg(Color::Yellow).add_attribute(Attribute::Bold)
        } else {
            cell
        }
    };
    let mut total = vec![total_label("Total")];
    if second.is_some() {
        total.push(Cell::new(""));
    }
    total.extend(numbers(&doc.totals, true));
    table.add_row(total);
    let narrow = fit(&mut table, second.is_some());

    let mut text = format!("{title}\n{table}\n");
    if doc.truncated {
        text.push_str(
            "Only the first lines fitted /usage's row limit; the total line counts every \
             request. Narrow the range with --since and --until.\n",
        );
    }
    if narrow {
        text.push_str(
            "Cache columns hidden to fit the terminal; widen it, or use --json or --csv.\n",
        );
    }
    text.push_str(
        "Cost at API prices; for subscription (OAuth) traffic it is the API-equivalent cost, \
         not a bill.",
    );
    text
}

/// Numbers and periods are never broken across lines; only the list of names wraps. When even
/// so the table is wider than the terminal, the two cache columns give way (as ccusage's compact
/// mode does). Returns whether they did.
fn fit(table: &mut Table, has_names: bool) -> bool {
    let columns = table.column_count();
    let names = if has_names { Some(1) } else { None };
    let cache = [columns - 4, columns - 3];
    let keep = |table: &mut Table, hide_cache: bool| {
        for (i, column) in table.column_iter_mut().enumerate() {
            if Some(i) == names {
                continue;
            }
            column.set_constraint(if hide_cache && cache.contains(&i) {
                ColumnConstraint::Hidden
            } else {
                ColumnConstraint::ContentWidth
            });
        }
    };
    keep(table, false);
    let Some(limit) = table.width() else {
        return false;
    };
    // The narrowest the table can be: names wrapped to their longest word.
    let mut probe = table.clone();
    probe.set_content_arrangement(ContentArrangement::Disabled);
    if let Some(names) = names {
        let longest = table
            .column_cells_iter(names)
            .flatten()
            .flat_map(|cell| {
                cell.content()
                    .split(['-', '\n'])
                    .map(|word| word.chars().count())
                    .collect::<Vec<_>>()
            })
            .max()
            .unwrap_or(0);
        probe.column_iter_mut().nth(names).unwrap().set_constraint(
            ColumnConstraint::UpperBoundary(comfy_table::Width::Fixed(longest as u16 + 4)),
        );
    }
    let narrowest = probe
        .to_string()
        .lines()
        .map(|line| line.chars().count())
        .max()
        .unwrap_or(0);
    let hide = narrowest > usize::from(limit);
    if hide {
        keep(table, true);
    }
    hide
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_and_dollars_are_formatted() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(usd(0.0), "$0.0000");
        assert_eq!(usd(0.00004), "$0.0000");
        assert_eq!(usd(0.00005), "$0.0001");
        assert_eq!(usd(1234.5), "$1,234.5000");
        assert_eq!(usd(12.34567), "$12.3457");
    }

    #[test]
    fn only_the_running_block_has_time_left() {
        let at = |text: &str| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let now = at("2026-11-27T12:47:00Z");
        assert_eq!(
            block_left("2026-11-27T09:00:00Z", now).as_deref(),
            Some("1 h 13 min")
        );
        assert_eq!(
            block_left("2026-11-27T11:00:00+01:00", now).as_deref(),
            Some("2 h 13 min")
        );
        assert_eq!(
            block_left("2026-11-27T12:00:00Z", at("2026-11-27T16:59:30Z")).as_deref(),
            Some("1 min")
        );
        assert_eq!(block_left("2026-11-27T07:00:00Z", now), None, "ended");
        assert_eq!(block_left("2026-11-27T13:00:00Z", now), None, "not begun");
        assert_eq!(block_left("2026-11-27", now), None);
    }

    #[test]
    fn blocks_read_as_local_start_times() {
        assert_eq!(
            period_text(Dimension::Block, "2026-11-27T09:00:00+01:00"),
            "2026-11-27 09:00"
        );
        assert_eq!(period_text(Dimension::Day, "2026-11-27"), "2026-11-27");
    }
}
