//! The admission rule as a pure table: given a quota's limits, what its subject has used and
//! how many of its requests are in flight, which limits are reached — and the words a refused
//! client reads.
//!
//! A limit is reached when what is used is at or above it. Spend counts every finished request,
//! so the request that takes a subject to its limit was admitted below it and the next one is
//! refused: a subject passes a money or token limit by at most what its requests in flight cost.
//! Requests count against `max_requests` when they are admitted, so that limit is exact even
//! for requests sent at the same time, as is `max_concurrent`.

use jiff::Timestamp;

use super::settings::Limits;
use super::window::{Spent, Window};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Usd,
    Tokens,
    Requests,
    Concurrent,
}

/// A limit that is reached: what is used against what is allowed (money in nano-dollars).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub kind: LimitKind,
    pub used: u64,
    pub limit: u64,
}

/// Every limit of `limits` that `spent` and `in_flight` reach, in the order usd, tokens,
/// requests, concurrent.
pub fn reached(limits: &Limits, spent: &Spent, in_flight: u64) -> [Option<Reached>; 4] {
    let check = |kind, used: u64, limit: Option<u64>| {
        limit
            .filter(|limit| used >= *limit)
            .map(|limit| Reached { kind, used, limit })
    };
    [
        check(LimitKind::Usd, spent.usd_nanos, limits.usd_nanos),
        check(LimitKind::Tokens, spent.tokens, limits.tokens),
        check(LimitKind::Requests, spent.requests, limits.requests),
        check(LimitKind::Concurrent, in_flight, limits.concurrent),
    ]
}

/// Whether `spent` still reaches one of the windowed limits (used to find when a window frees).
pub fn window_limit_reached(limits: &Limits, spent: &Spent) -> bool {
    reached(limits, spent, 0)
        .iter()
        .flatten()
        .any(|r| r.kind != LimitKind::Concurrent)
}

/// What a client is told when a quota refuses it: `quota {name} reached for {subject}: {used}
/// of {limit} {period}; {when it frees}` (sluice's error body adds the `sluice: ` prefix).
pub fn refusal_message(
    quota: &str,
    subject: &str,
    first: &Reached,
    window: Option<Window>,
    frees_at: Option<Timestamp>,
) -> String {
    let amounts = match first.kind {
        LimitKind::Usd => {
            let decimals = if first.limit % 10_000_000 == 0 { 2 } else { 4 };
            format!(
                "${:.*} of ${:.*}",
                decimals,
                first.used as f64 / 1e9,
                decimals,
                first.limit as f64 / 1e9
            )
        }
        LimitKind::Tokens => format!(
            "{} of {} tokens",
            thousands(first.used),
            thousands(first.limit)
        ),
        LimitKind::Requests => format!(
            "{} of {} requests",
            thousands(first.used),
            thousands(first.limit)
        ),
        LimitKind::Concurrent => {
            return format!(
                "quota {quota} reached for {subject}: {} of {} requests in flight; retry when one \
                 of them ends",
                first.used, first.limit
            )
        }
    };
    let period = window.map(Window::period).unwrap_or_default();
    let when = match (window, frees_at) {
        (Some(Window::Rolling { .. }), Some(at)) => {
            format!("under the limit again at {}", rfc3339(at))
        }
        (_, Some(at)) => format!("resets at {}", rfc3339(at)),
        (_, None) => "resets when the window ends".to_string(),
    };
    format!("quota {quota} reached for {subject}: {amounts} {period}; {when}")
}

/// `2026-11-28T00:00:00Z`: whole seconds, UTC.
pub fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `5000000` → `5,000,000`.
fn thousands(n: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    const NANOS: u64 = 1_000_000_000;

    fn limits(
        usd: Option<u64>,
        tokens: Option<u64>,
        requests: Option<u64>,
        concurrent: Option<u64>,
    ) -> Limits {
        Limits {
            usd_nanos: usd,
            tokens,
            requests,
            concurrent,
        }
    }

    fn kinds(r: [Option<Reached>; 4]) -> Vec<LimitKind> {
        r.iter().flatten().map(|r| r.kind).collect()
    }

    #[test]
    fn decision_table() {
        use LimitKind::*;
        let all = limits(Some(20 * NANOS), Some(1000), Some(10), Some(2));
        let spent = |usd, tokens, requests| Spent {
            usd_nanos: usd,
            tokens,
            requests,
        };
        // (limits, spent, in flight) → limits reached
        let table: Vec<(Limits, Spent, u64, Vec<LimitKind>)> = vec![
            (all, spent(0, 0, 0), 0, vec![]),
            (all, spent(20 * NANOS - 1, 999, 9), 1, vec![]),
            (all, spent(20 * NANOS, 0, 0), 0, vec![Usd]),
            (all, spent(25 * NANOS, 0, 0), 0, vec![Usd]),
            (all, spent(0, 1000, 0), 0, vec![Tokens]),
            (all, spent(0, 0, 10), 0, vec![Requests]),
            (all, spent(0, 0, 0), 2, vec![Concurrent]),
            (
                all,
                spent(20 * NANOS, 1000, 10),
                2,
                vec![Usd, Tokens, Requests, Concurrent],
            ),
            // Limits that are not set are never reached.
            (
                limits(None, None, None, Some(1)),
                spent(u64::MAX, u64::MAX, u64::MAX),
                0,
                vec![],
            ),
            (
                limits(Some(NANOS), None, None, None),
                spent(0, 0, 0),
                1000,
                vec![],
            ),
        ];
        for (limits, spent, in_flight, expected) in table {
            assert_eq!(
                kinds(reached(&limits, &spent, in_flight)),
                expected,
                "{limits:?} {spent:?} in flight {in_flight}"
            );
        }
        assert!(!window_limit_reached(&all, &spent(0, 0, 0)));
        assert!(window_limit_reached(&all, &spent(0, 0, 10)));
    }

    #[test]
    fn refusal_messages_read_like_the_documented_one() {
        let at: Timestamp = "2026-11-28T00:00:00Z".parse().unwrap();
        let usd = Reached {
            kind: LimitKind::Usd,
            used: 20 * NANOS,
            limit: 20 * NANOS,
        };
        assert_eq!(
            refusal_message(
                "daily-per-person",
                "alice",
                &usd,
                Some(Window::Day),
                Some(at)
            ),
            "quota daily-per-person reached for alice: $20.00 of $20.00 this day; resets at \
             2026-11-28T00:00:00Z"
        );
        let tokens = Reached {
            kind: LimitKind::Tokens,
            used: 5_000_312,
            limit: 5_000_000,
        };
        assert_eq!(
            refusal_message("t", "bob", &tokens, Some(Window::Week), Some(at)),
            "quota t reached for bob: 5,000,312 of 5,000,000 tokens this week; resets at \
             2026-11-28T00:00:00Z"
        );
        let requests = Reached {
            kind: LimitKind::Requests,
            used: 100,
            limit: 100,
        };
        assert_eq!(
            refusal_message(
                "r",
                "everyone",
                &requests,
                Window::parse("24h").ok(),
                Some(at)
            ),
            "quota r reached for everyone: 100 of 100 requests in the last 24h; under the limit \
             again at 2026-11-28T00:00:00Z"
        );
        let concurrent = Reached {
            kind: LimitKind::Concurrent,
            used: 4,
            limit: 4,
        };
        assert_eq!(
            refusal_message("c", "alice", &concurrent, None, None),
            "quota c reached for alice: 4 of 4 requests in flight; retry when one of them ends"
        );
        // Sub-cent limits keep their digits.
        let small = Reached {
            kind: LimitKind::Usd,
            used: 5_100_000,
            limit: 5_000_000,
        };
        assert!(
            refusal_message("s", "a", &small, Some(Window::Day), Some(at))
                .contains("$0.0051 of $0.0050 this day")
        );
    }
}
