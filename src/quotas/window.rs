//! Quota windows as pure time arithmetic: which window holds a moment, when it ends, and how a
//! subject's spend is tallied inside it. The clock is always passed in.
//!
//! - `"day"`, `"week"` (ISO, from Monday), `"month"`: calendar periods in the quota's time zone,
//!   so a day in Europe/Berlin runs from Berlin midnight to Berlin midnight, 23 or 25 hours long
//!   on the days the clocks change.
//! - `"5h"`: the 5-hour block of a subscription, counted as ccusage counts it: a block starts at
//!   the start of the UTC hour of a subject's first request and lasts 5 hours; the first request
//!   after it ends starts the next. Each subject has its own blocks; the time zone plays no part.
//! - `"1h"`..`"30d"` rolling: the spend of the last N hours or days, kept in [`ROLLING_BUCKETS`]
//!   buckets per window. Every finished request counts in full from the moment it is charged;
//!   only its leaving the window is coarse: spend leaves up to one bucket late (15 s for 1h,
//!   6 min for 1d, 3 h for 30d), never early, so a limit is never exceeded because of buckets.

use std::collections::VecDeque;
use std::fmt;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

/// Buckets per rolling window: bounds the memory of a subject (at most this many + 1 entries)
/// and sets how late spend may leave the window (one bucket, 1/240 of the window).
pub const ROLLING_BUCKETS: i64 = 240;

/// Shortest and longest rolling window, in seconds.
const ROLLING_MIN_S: i64 = 3600;
const ROLLING_MAX_S: i64 = 30 * 86_400;
const FIVE_HOURS_S: i64 = 5 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    FiveHour,
    Day,
    Week,
    Month,
    /// The last `seconds` before now; a whole number of hours, written in days when
    /// `in_days`.
    Rolling {
        seconds: i64,
        in_days: bool,
    },
}

impl Window {
    /// `"5h"`, `"day"`, `"week"`, `"month"`, or `"<n>h"` / `"<n>d"` from 1h to 30d.
    pub fn parse(text: &str) -> Result<Window, String> {
        match text {
            "5h" => return Ok(Window::FiveHour),
            "day" => return Ok(Window::Day),
            "week" => return Ok(Window::Week),
            "month" => return Ok(Window::Month),
            _ => {}
        }
        let wrong = || {
            format!(
                "{text:?} is not \"5h\", \"day\", \"week\", \"month\" or a rolling window \
                 from \"1h\" to \"30d\" (like \"12h\" or \"7d\")"
            )
        };
        let (number, unit) = text.split_at(text.len().saturating_sub(1));
        let unit_s = match unit {
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(wrong()),
        };
        let count: i64 = number.parse().map_err(|_| wrong())?;
        let seconds = count.checked_mul(unit_s).ok_or_else(wrong)?;
        if !(ROLLING_MIN_S..=ROLLING_MAX_S).contains(&seconds) {
            return Err(wrong());
        }
        Ok(Window::Rolling {
            seconds,
            in_days: unit == "d",
        })
    }

    /// Calendar windows depend on the time zone; the others do not.
    pub fn is_calendar(self) -> bool {
        matches!(self, Window::Day | Window::Week | Window::Month)
    }

    /// Words that follow "$3.00 of $20.00" in a refusal.
    pub fn period(self) -> String {
        match self {
            Window::FiveHour => "this 5-hour block".into(),
            Window::Day => "this day".into(),
            Window::Week => "this week".into(),
            Window::Month => "this month".into(),
            Window::Rolling { .. } => format!("in the last {self}"),
        }
    }

    /// Width of one bucket of a rolling window, in seconds.
    fn bucket_s(self) -> Option<i64> {
        match self {
            Window::Rolling { seconds, .. } => Some(seconds / ROLLING_BUCKETS),
            _ => None,
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::FiveHour => f.write_str("5h"),
            Window::Day => f.write_str("day"),
            Window::Week => f.write_str("week"),
            Window::Month => f.write_str("month"),
            Window::Rolling {
                seconds,
                in_days: true,
            } => write!(f, "{}d", seconds / 86_400),
            Window::Rolling { seconds, .. } => write!(f, "{}h", seconds / 3600),
        }
    }
}

/// `[start, end)` of the calendar day, week or month that holds `at` in `tz`.
/// `None` for windows that are not calendar periods.
pub fn calendar_bounds(
    window: Window,
    tz: &TimeZone,
    at: Timestamp,
) -> Option<(Timestamp, Timestamp)> {
    let zoned = at.to_zoned(tz.clone());
    let date = zoned.date();
    let (first, next) = match window {
        Window::Day => (date, date.tomorrow().ok()?),
        Window::Week => {
            let monday = date
                .checked_sub(i64::from(date.weekday().to_monday_zero_offset()).days())
                .ok()?;
            (monday, monday.checked_add(1.week()).ok()?)
        }
        Window::Month => {
            let first = date.first_of_month();
            (first, first.checked_add(1.month()).ok()?)
        }
        Window::FiveHour | Window::Rolling { .. } => return None,
    };
    let start_of = |day: jiff::civil::Date| -> Option<Timestamp> {
        // `start_of_day` rather than midnight: in a zone whose clocks skip midnight the day
        // starts at the first instant that exists.
        Some(
            day.to_zoned(tz.clone())
                .ok()?
                .start_of_day()
                .ok()?
                .timestamp(),
        )
    };
    Some((start_of(first)?, start_of(next)?))
}

/// Start of the 5-hour block that a request at `at` opens: the start of its UTC hour.
pub fn block_start(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second().div_euclid(3600) * 3600).unwrap_or(at)
}

/// Whole seconds from `now` until `then`, rounded up, at least 1 (a `retry-after` of 0 would
/// invite an immediate retry that is refused again).
pub fn seconds_until(now: Timestamp, then: Timestamp) -> u64 {
    let nanos = then.as_nanosecond() - now.as_nanosecond();
    let seconds = (nanos + 999_999_999).div_euclid(1_000_000_000);
    u64::try_from(seconds).unwrap_or(0).max(1)
}

/// What one subject has used: money in nano-dollars (so sums and comparisons are exact),
/// tokens, requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub usd_nanos: u64,
    pub tokens: u64,
    pub requests: u64,
}

impl Spent {
    /// `usd` is rounded to the nano-dollar, like every cost sluice shows.
    pub fn new(usd: f64, tokens: u64, requests: u64) -> Spent {
        Spent {
            usd_nanos: usd_to_nanos(usd),
            tokens,
            requests,
        }
    }

    pub fn usd(&self) -> f64 {
        self.usd_nanos as f64 / 1e9
    }

    fn add(&mut self, other: Spent) {
        self.usd_nanos = self.usd_nanos.saturating_add(other.usd_nanos);
        self.tokens = self.tokens.saturating_add(other.tokens);
        self.requests = self.requests.saturating_add(other.requests);
    }

    pub fn is_zero(&self) -> bool {
        *self == Spent::default()
    }
}

/// Dollars to nano-dollars, rounded; negative and non-finite amounts count as nothing.
pub fn usd_to_nanos(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e9).round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// A subject's spend in its window, as it stands at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub spent: Spent,
    /// When the window holding the spend ends (calendar and 5-hour windows); `None` for a
    /// 5-hour block not yet started, and for rolling windows (which free gradually).
    pub resets_at: Option<Timestamp>,
}

/// A subject's spend, tallied for one window kind. Memory is bounded: one total for fixed
/// windows, at most `ROLLING_BUCKETS + 1` buckets for rolling ones.
#[derive(Debug, Clone)]
pub enum Tally {
    /// Calendar and 5-hour windows: the spend of the window `[start, end)`.
    Fixed {
        start: Timestamp,
        end: Timestamp,
        spent: Spent,
    },
    /// Rolling windows: spend per bucket, oldest first, keyed by the bucket's index (its start
    /// in seconds divided by the bucket width).
    Rolling(VecDeque<(i64, Spent)>),
    /// Nothing charged yet to a fixed window.
    Empty,
}

impl Tally {
    pub fn new(window: Window) -> Tally {
        match window {
            Window::Rolling { .. } => Tally::Rolling(VecDeque::new()),
            _ => Tally::Empty,
        }
    }

    /// Adds `spent` at the moment `at`. Spend that belongs to a window older than the one
    /// tallied is dropped (a late record of a window that has ended no longer counts).
    pub fn add(&mut self, window: Window, tz: &TimeZone, at: Timestamp, spent: Spent) {
        match self {
            Tally::Rolling(buckets) => {
                let Some(width) = window.bucket_s() else {
                    return;
                };
                let index = at.as_second().div_euclid(width);
                if index < oldest_counted(window, width, at) {
                    return;
                }
                let position = buckets.partition_point(|(i, _)| *i < index);
                match buckets.get_mut(position) {
                    Some((i, bucket)) if *i == index => bucket.add(spent),
                    _ => buckets.insert(position, (index, spent)),
                }
                prune(buckets, window, width, at);
            }
            Tally::Fixed {
                start,
                end,
                spent: total,
            } => {
                if at < *start {
                    return;
                }
                if at < *end {
                    total.add(spent);
                    return;
                }
                if let Some(fresh) = Tally::opened(window, tz, at, spent) {
                    *self = fresh;
                }
            }
            Tally::Empty => {
                if let Some(fresh) = Tally::opened(window, tz, at, spent) {
                    *self = fresh;
                }
            }
        }
    }

    /// A fixed tally whose window holds `at`, with `spent` in it.
    fn opened(window: Window, tz: &TimeZone, at: Timestamp, spent: Spent) -> Option<Tally> {
        let (start, end) = match window {
            Window::FiveHour => {
                let start = block_start(at);
                (
                    start,
                    start
                        .checked_add(SignedDuration::from_secs(FIVE_HOURS_S))
                        .ok()?,
                )
            }
            _ => calendar_bounds(window, tz, at)?,
        };
        Some(Tally::Fixed { start, end, spent })
    }

    /// Removes `spent` that was added at `at` (a request counted, then refused by another
    /// quota). Nothing happens when the window holding `at` is no longer tallied.
    pub fn take_back(&mut self, window: Window, at: Timestamp, spent: Spent) {
        let target = match self {
            Tally::Fixed { start, end, spent } if *start <= at && at < *end => Some(spent),
            Tally::Rolling(buckets) => window.bucket_s().and_then(|width| {
                let index = at.as_second().div_euclid(width);
                buckets
                    .iter_mut()
                    .find(|(i, _)| *i == index)
                    .map(|(_, bucket)| bucket)
            }),
            _ => None,
        };
        if let Some(total) = target {
            total.usd_nanos = total.usd_nanos.saturating_sub(spent.usd_nanos);
            total.tokens = total.tokens.saturating_sub(spent.tokens);
            total.requests = total.requests.saturating_sub(spent.requests);
        }
    }

    /// The spend that counts at `now`, and when its window ends.
    pub fn standing(&self, window: Window, tz: &TimeZone, now: Timestamp) -> Standing {
        match self {
            Tally::Fixed { start, end, spent } if *start <= now && now < *end => Standing {
                spent: *spent,
                resets_at: Some(*end),
            },
            Tally::Rolling(buckets) => {
                let mut spent = Spent::default();
                if let Some(width) = window.bucket_s() {
                    let oldest = oldest_counted(window, width, now);
                    for (_, bucket) in buckets.iter().filter(|(i, _)| *i >= oldest) {
                        spent.add(*bucket);
                    }
                }
                Standing {
                    spent,
                    resets_at: None,
                }
            }
            // Nothing in the window that holds `now`: a calendar window still has an end; a
            // 5-hour block only begins with the next request.
            _ => Standing {
                spent: Spent::default(),
                resets_at: calendar_bounds(window, tz, now).map(|(_, end)| end),
            },
        }
    }

    /// The earliest moment from `now` on at which `still_over` no longer holds for the spend
    /// left in the window, when that depends only on time passing. For fixed windows it is the
    /// window's end; for rolling windows the moment enough old buckets have left.
    pub fn frees_at(
        &self,
        window: Window,
        tz: &TimeZone,
        now: Timestamp,
        still_over: impl Fn(&Spent) -> bool,
    ) -> Option<Timestamp> {
        match self {
            Tally::Rolling(buckets) => {
                let width = window.bucket_s()?;
                let Window::Rolling { seconds, .. } = window else {
                    return None;
                };
                let oldest = oldest_counted(window, width, now);
                let mut left = self.standing(window, tz, now).spent;
                for (index, bucket) in buckets.iter().filter(|(i, _)| *i >= oldest) {
                    left = Spent {
                        usd_nanos: left.usd_nanos.saturating_sub(bucket.usd_nanos),
                        tokens: left.tokens.saturating_sub(bucket.tokens),
                        requests: left.requests.saturating_sub(bucket.requests),
                    };
                    if !still_over(&left) {
                        // The bucket stops counting once its end is a whole window ago.
                        return Timestamp::from_second((index + 1) * width + seconds).ok();
                    }
                }
                None
            }
            _ => self.standing(window, tz, now).resets_at,
        }
    }

    /// Nothing counts at `now`: the entry can be forgotten without losing spend.
    pub fn is_spent_out(&self, window: Window, tz: &TimeZone, now: Timestamp) -> bool {
        self.standing(window, tz, now).spent.is_zero()
    }
}

/// Index of the oldest bucket that still counts at `now`: the one holding `now - window`
/// (part of it is still inside the window).
fn oldest_counted(window: Window, width: i64, now: Timestamp) -> i64 {
    let Window::Rolling { seconds, .. } = window else {
        return i64::MIN;
    };
    (now.as_second() - seconds).div_euclid(width)
}

fn prune(buckets: &mut VecDeque<(i64, Spent)>, window: Window, width: i64, now: Timestamp) {
    let oldest = oldest_counted(window, width, now);
    while buckets.front().is_some_and(|(i, _)| *i < oldest) {
        buckets.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn spent(usd: f64) -> Spent {
        Spent::new(usd, 0, 1)
    }

    #[test]
    fn windows_parse_and_print_back() {
        for text in ["5h", "day", "week", "month", "1h", "12h", "7d", "30d"] {
            assert_eq!(Window::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Window::parse("24h").unwrap(),
            Window::Rolling {
                seconds: 86_400,
                in_days: false
            }
        );
        for bad in [
            "", "h", "0h", "31d", "721h", "1m", "-1h", "1.5h", "year", "5H",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn calendar_day_in_berlin_runs_from_berlin_midnight() {
        let berlin = tz("Europe/Berlin");
        // 23:30 UTC on the 27th is 00:30 on the 28th in Berlin (UTC+1 in winter).
        let (start, end) =
            calendar_bounds(Window::Day, &berlin, ts("2026-11-27T23:30:00Z")).unwrap();
        assert_eq!(start, ts("2026-11-27T23:00:00Z"));
        assert_eq!(end, ts("2026-11-28T23:00:00Z"));
        // One minute before Berlin midnight is still the 27th there.
        let (start, _) = calendar_bounds(Window::Day, &berlin, ts("2026-11-27T22:59:00Z")).unwrap();
        assert_eq!(start, ts("2026-11-26T23:00:00Z"));
    }

    #[test]
    fn calendar_day_across_dst_changes_is_23_or_25_hours() {
        let berlin = tz("Europe/Berlin");
        // 2026-03-29: clocks go from 02:00 CET to 03:00 CEST.
        let (start, end) =
            calendar_bounds(Window::Day, &berlin, ts("2026-03-29T12:00:00Z")).unwrap();
        assert_eq!(start, ts("2026-03-28T23:00:00Z"));
        assert_eq!(end, ts("2026-03-29T22:00:00Z"));
        assert_eq!(end.duration_since(start).as_hours(), 23);
        // 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET.
        let (start, end) =
            calendar_bounds(Window::Day, &berlin, ts("2026-10-25T12:00:00Z")).unwrap();
        assert_eq!(start, ts("2026-10-24T22:00:00Z"));
        assert_eq!(end, ts("2026-10-25T23:00:00Z"));
        assert_eq!(end.duration_since(start).as_hours(), 25);
        let new_york = tz("America/New_York");
        // 2026-11-01: EDT (UTC-4) back to EST (UTC-5) at 02:00.
        let (start, end) =
            calendar_bounds(Window::Day, &new_york, ts("2026-11-01T12:00:00Z")).unwrap();
        assert_eq!(start, ts("2026-11-01T04:00:00Z"));
        assert_eq!(end, ts("2026-11-02T05:00:00Z"));
    }

    #[test]
    fn calendar_week_starts_monday_and_month_on_the_first() {
        let utc = TimeZone::UTC;
        // 2026-11-27 is a Friday.
        let (start, end) = calendar_bounds(Window::Week, &utc, ts("2026-11-27T10:00:00Z")).unwrap();
        assert_eq!(start, ts("2026-11-23T00:00:00Z"));
        assert_eq!(end, ts("2026-11-30T00:00:00Z"));
        let (start, end) =
            calendar_bounds(Window::Month, &utc, ts("2026-12-31T23:59:59Z")).unwrap();
        assert_eq!(start, ts("2026-12-01T00:00:00Z"));
        assert_eq!(end, ts("2027-01-01T00:00:00Z"));
        // A month in Berlin that contains a DST change still ends at Berlin midnight.
        let berlin = tz("Europe/Berlin");
        let (start, end) =
            calendar_bounds(Window::Month, &berlin, ts("2026-10-15T00:00:00Z")).unwrap();
        assert_eq!(start, ts("2026-09-30T22:00:00Z"));
        assert_eq!(end, ts("2026-10-31T23:00:00Z"));
    }

    #[test]
    fn day_tally_resets_at_local_midnight() {
        let berlin = tz("Europe/Berlin");
        let mut tally = Tally::new(Window::Day);
        tally.add(
            Window::Day,
            &berlin,
            ts("2026-11-27T22:00:00Z"),
            spent(0.04),
        );
        tally.add(
            Window::Day,
            &berlin,
            ts("2026-11-27T22:59:59Z"),
            spent(0.03),
        );
        let before = tally.standing(Window::Day, &berlin, ts("2026-11-27T22:59:59Z"));
        assert_eq!(before.spent.usd_nanos, 70_000_000);
        assert_eq!(before.spent.requests, 2);
        assert_eq!(before.resets_at, Some(ts("2026-11-27T23:00:00Z")));
        // Berlin midnight: nothing counts any more, and the next reset is a day later.
        let after = tally.standing(Window::Day, &berlin, ts("2026-11-27T23:00:00Z"));
        assert!(after.spent.is_zero());
        assert_eq!(after.resets_at, Some(ts("2026-11-28T23:00:00Z")));
        tally.add(
            Window::Day,
            &berlin,
            ts("2026-11-27T23:00:01Z"),
            spent(0.01),
        );
        let next = tally.standing(Window::Day, &berlin, ts("2026-11-27T23:30:00Z"));
        assert_eq!(next.spent.usd_nanos, 10_000_000);
        // A late record of the day before no longer counts.
        tally.add(Window::Day, &berlin, ts("2026-11-27T22:30:00Z"), spent(1.0));
        let late = tally.standing(Window::Day, &berlin, ts("2026-11-27T23:30:00Z"));
        assert_eq!(late.spent.usd_nanos, 10_000_000);
    }

    #[test]
    fn five_hour_block_starts_at_the_hour_of_the_first_request() {
        let utc = TimeZone::UTC;
        let w = Window::FiveHour;
        let mut tally = Tally::new(w);
        // No block yet: nothing to reset.
        assert_eq!(
            tally
                .standing(w, &utc, ts("2026-11-27T10:00:00Z"))
                .resets_at,
            None
        );
        tally.add(w, &utc, ts("2026-11-27T10:37:12Z"), spent(1.0));
        tally.add(w, &utc, ts("2026-11-27T14:59:59Z"), spent(2.0));
        let inside = tally.standing(w, &utc, ts("2026-11-27T14:59:59Z"));
        assert_eq!(inside.spent.usd_nanos, 3_000_000_000);
        assert_eq!(inside.resets_at, Some(ts("2026-11-27T15:00:00Z")));
        // The block has ended and no request has started the next: nothing counts.
        let gap = tally.standing(w, &utc, ts("2026-11-27T16:10:00Z"));
        assert!(gap.spent.is_zero());
        assert_eq!(gap.resets_at, None);
        // The first request after it opens a block at the start of its own hour.
        tally.add(w, &utc, ts("2026-11-27T16:10:00Z"), spent(0.5));
        let next = tally.standing(w, &utc, ts("2026-11-27T16:20:00Z"));
        assert_eq!(next.spent.usd_nanos, 500_000_000);
        assert_eq!(next.resets_at, Some(ts("2026-11-27T21:00:00Z")));
    }

    #[test]
    fn rolling_hour_counts_the_last_hour_and_frees_bucket_by_bucket() {
        let utc = TimeZone::UTC;
        let w = Window::parse("1h").unwrap();
        let mut tally = Tally::new(w);
        // Buckets are 15 s wide: 10:00:00 and 10:00:14 share one, 10:30:00 has its own.
        tally.add(w, &utc, ts("2026-11-27T10:00:00Z"), spent(0.03));
        tally.add(w, &utc, ts("2026-11-27T10:00:14Z"), spent(0.03));
        tally.add(w, &utc, ts("2026-11-27T10:30:00Z"), spent(0.04));
        let at = |t: &str| tally.standing(w, &utc, ts(t)).spent.usd_nanos;
        assert_eq!(at("2026-11-27T10:59:59Z"), 100_000_000);
        // The first bucket (10:00:00–10:00:15) leaves at 11:00:15, never before 11:00:14.
        assert_eq!(at("2026-11-27T11:00:14Z"), 100_000_000);
        assert_eq!(at("2026-11-27T11:00:15Z"), 40_000_000);
        assert_eq!(at("2026-11-27T11:30:15Z"), 0);
        // With $0.10 used of $0.10, the window is under the limit once the first bucket leaves.
        let limit = 100_000_000;
        let frees = tally.frees_at(w, &utc, ts("2026-11-27T10:59:59Z"), |s| {
            s.usd_nanos >= limit
        });
        assert_eq!(frees, Some(ts("2026-11-27T11:00:15Z")));
        // Needing both buckets gone (a limit of $0.03) takes until the second bucket leaves.
        let frees = tally.frees_at(w, &utc, ts("2026-11-27T10:59:59Z"), |s| {
            s.usd_nanos >= 30_000_000
        });
        assert_eq!(frees, Some(ts("2026-11-27T11:30:15Z")));
    }

    #[test]
    fn rolling_buckets_stay_bounded() {
        let utc = TimeZone::UTC;
        let w = Window::parse("30d").unwrap();
        let mut tally = Tally::new(w);
        let mut now = ts("2026-01-01T00:00:00Z");
        // A request every 10 minutes for 90 days.
        for _ in 0..(90 * 144) {
            tally.add(w, &utc, now, spent(0.001));
            now = now.checked_add(SignedDuration::from_mins(10)).unwrap();
        }
        let Tally::Rolling(buckets) = &tally else {
            panic!("a rolling window keeps buckets")
        };
        assert!(
            buckets.len() as i64 <= ROLLING_BUCKETS + 1,
            "{}",
            buckets.len()
        );
        // 30 days of 144 requests a day, plus at most one 3-hour bucket of 18 more.
        let requests = tally.standing(w, &utc, now).spent.requests;
        assert!((30 * 144..=30 * 144 + 18).contains(&requests), "{requests}");
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let now = ts("2026-11-27T23:59:58.200Z");
        assert_eq!(seconds_until(now, ts("2026-11-28T00:00:00Z")), 2);
        assert_eq!(seconds_until(now, now), 1);
        assert_eq!(
            seconds_until(ts("2026-11-27T00:00:00Z"), ts("2026-11-28T00:00:00Z")),
            86_400
        );
    }

    #[test]
    fn money_is_summed_in_nano_dollars() {
        // 0.7 + 0.1 is 0.7999999999999999 in f64; in nano-dollars it is exactly 0.8.
        let mut total = Spent::new(0.7, 0, 0);
        total.add(Spent::new(0.1, 0, 0));
        assert_eq!(total.usd_nanos, usd_to_nanos(0.8));
        assert_eq!(usd_to_nanos(f64::NAN), 0);
        assert_eq!(usd_to_nanos(-1.0), 0);
    }
}
