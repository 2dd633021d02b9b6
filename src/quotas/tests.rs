//! The ledger's behaviour, with an injected clock: exactness, concurrency, windows, shadow
//! mode, subjects, reload and the bound on subjects.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use jiff::{SignedDuration, Timestamp};

use super::ledger::{Ledger, QuotaReport, Refusal, FOLDED_SUBJECT};
use super::settings::tests::quotas;
use super::settings::RequestSubjects;
use super::window::Spent;
use super::{spent_of, Mode};
use crate::usage::Usage;

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn ledger(toml_text: &str) -> Ledger {
    Ledger::new(quotas(toml_text).unwrap())
}

fn caller(name: &str) -> RequestSubjects<'_> {
    RequestSubjects {
        caller: Some(name),
        ..Default::default()
    }
}

fn after(at: Timestamp, seconds: i64) -> Timestamp {
    at.checked_add(SignedDuration::from_secs(seconds)).unwrap()
}

/// Admits a request at `now` and settles it at once with `spent`.
fn finished(
    ledger: &Ledger,
    request: &RequestSubjects,
    now: Timestamp,
    spent: Spent,
) -> Result<(), Refusal> {
    let admission = ledger.admit(request, now)?;
    admission.guard.settle(spent, now);
    Ok(())
}

fn report<'a>(reports: &'a [QuotaReport], name: &str) -> &'a QuotaReport {
    reports.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn the_request_reaching_the_limit_is_admitted_and_the_next_refused() {
    let ledger =
        ledger("[[quotas]]\nname = \"daily\"\ncaller = \"*\"\nwindow = \"day\"\nmax_usd = 0.10\n");
    // A request of 8,000 input and 1,000 output tokens on a model priced $3 / $15 per million.
    let usage = Usage {
        input_tokens: 8_000,
        output_tokens: 1_000,
        ..Default::default()
    };
    let cost = 8_000.0 * 3.0 / 1e6 + 1_000.0 * 15.0 / 1e6;
    let limit = 0.10;
    let now = ts("2026-11-27T18:00:00Z");
    let alice = caller("alice");
    let mut total = 0.0;
    let mut admitted = 0;
    let refusal = loop {
        match finished(&ledger, &alice, now, spent_of(Some(cost), &usage)) {
            Ok(()) => {
                // Every admitted request was admitted below the limit.
                assert!(total < limit, "admitted at ${total} of ${limit}");
                total += cost;
                admitted += 1;
            }
            Err(refusal) => break refusal,
        }
        assert!(admitted < 100, "never refused");
    };
    // Refused only once the limit is reached, and passed by less than one request's cost.
    assert!(total >= limit - 1e-9, "refused at ${total}");
    assert!(total - limit <= cost, "overshoot ${}", total - limit);
    assert_eq!(admitted, (limit / cost).ceil() as usize);
    assert_eq!(refusal.quota, "daily");
    assert_eq!(refusal.subject, "alice");
    assert_eq!(
        refusal.message,
        format!(
            "quota daily reached for alice: ${total:.2} of ${limit:.2} this day; resets at \
             2026-11-28T00:00:00Z"
        )
    );
    assert_eq!(refusal.retry_after_s, 6 * 3600);
    // Refused again, and counted.
    assert!(finished(&ledger, &alice, now, Spent::default()).is_err());
    let reports = ledger.report(now, 10);
    let daily = report(&reports, "daily");
    assert_eq!(daily.refused, 2);
    assert_eq!(daily.subjects[0].used.requests, admitted as u64);
    assert_eq!(daily.subjects[0].remaining.usd, Some(0.0));
    assert_eq!(
        daily.subjects[0].resets_at.as_deref(),
        Some("2026-11-28T00:00:00Z")
    );
}

#[test]
fn a_hold_settles_the_answer_at_the_table_price() {
    let ledger = ledger("[[quotas]]\nname = \"d\"\nwindow = \"day\"\nmax_usd = 1\n");
    let (input, output) = (2.0, 10.0);
    let prices = crate::pricing::PriceTable::new(
        [(
            "claude-test".to_string(),
            crate::pricing::Price::new(input, output, 0.0, 0.0),
        )]
        .into(),
    );
    let now = ts("2026-11-27T12:00:00Z");
    let admission = ledger.admit(&RequestSubjects::default(), now).unwrap();
    let hold = super::QuotaHold::new(admission.guard, Arc::new(prices));
    let usage = Usage {
        input_tokens: 100_000,
        output_tokens: 20_000,
        ..Default::default()
    };
    hold.settle(Some("claude-test-1"), &usage, None, now.into());
    let reports = ledger.report(now, 10);
    let used = &report(&reports, "d").subjects[0].used;
    assert_eq!(used.usd, (100_000.0 * input + 20_000.0 * output) / 1e6);
    assert_eq!(used.tokens, 120_000);
    assert_eq!((used.requests, used.in_flight), (1, 0));
}

#[test]
fn a_request_reaching_the_limit_exactly_closes_it() {
    let ledger = ledger("[[quotas]]\nname = \"d\"\nwindow = \"day\"\nmax_usd = 0.10\n");
    let now = ts("2026-11-27T18:00:00Z");
    let anyone = RequestSubjects::default();
    // 0.07 + 0.03 is 0.09999999999999999 in f64; in nano-dollars it is the limit exactly.
    assert!(finished(&ledger, &anyone, now, Spent::new(0.07, 0, 0)).is_ok());
    assert!(finished(&ledger, &anyone, now, Spent::new(0.03, 0, 0)).is_ok());
    let refusal = finished(&ledger, &anyone, now, Spent::default()).unwrap_err();
    assert_eq!(refusal.subject, "everyone");
    assert!(
        refusal.message.contains("$0.10 of $0.10 this day"),
        "{}",
        refusal.message
    );
}

#[test]
fn max_concurrent_admits_exactly_that_many_of_parallel_requests() {
    let ledger = Arc::new(ledger(
        "[[quotas]]\nname = \"two\"\ncaller = \"*\"\nmax_concurrent = 2\n",
    ));
    let threads = 10;
    let rounds = 20;
    let start = Arc::new(Barrier::new(threads));
    let counted = Arc::new(Barrier::new(threads));
    let admitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (ledger, start, counted) = (ledger.clone(), start.clone(), counted.clone());
            let (admitted, refused) = (admitted.clone(), refused.clone());
            std::thread::spawn(move || {
                let now = ts("2026-11-27T12:00:00Z");
                for round in 0..rounds {
                    start.wait();
                    // All ten ask at once and hold what they get until everyone has asked.
                    let held = ledger.admit(&caller("alice"), now);
                    match &held {
                        Ok(_) => admitted.fetch_add(1, Ordering::SeqCst),
                        Err(refusal) => {
                            assert_eq!(refusal.retry_after_s, 1);
                            refused.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                    counted.wait();
                    assert_eq!(admitted.load(Ordering::SeqCst), 2 * (round + 1));
                    // Wait until every thread has checked before anyone releases.
                    counted.wait();
                    drop(held);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(admitted.load(Ordering::SeqCst), 2 * rounds);
    assert_eq!(refused.load(Ordering::SeqCst), (threads - 2) * rounds);
    let reports = ledger.report(ts("2026-11-27T12:00:00Z"), 10);
    let two = report(&reports, "two");
    assert_eq!(
        two.subjects[0].used.in_flight, 0,
        "every slot was given back"
    );
    assert_eq!(two.refused, ((threads - 2) * rounds) as u64);
}

#[test]
fn a_client_that_leaves_gives_its_slot_back() {
    let ledger = ledger("[[quotas]]\nname = \"one\"\nmax_concurrent = 1\n");
    let now = ts("2026-11-27T12:00:00Z");
    let first = ledger.admit(&RequestSubjects::default(), now).unwrap();
    let refusal = ledger
        .admit(&RequestSubjects::default(), now)
        .err()
        .unwrap();
    assert_eq!(
        refusal.message,
        "quota one reached for everyone: 1 of 1 requests in flight; retry when one of them ends"
    );
    // Never settled: the handler was dropped because the client went away.
    drop(first.guard);
    assert!(ledger.admit(&RequestSubjects::default(), now).is_ok());
}

#[test]
fn calendar_day_in_berlin_resets_at_berlin_midnight() {
    let ledger = ledger(
        "[[quotas]]\nname = \"berlin\"\nwindow = \"day\"\ntimezone = \"Europe/Berlin\"\n\
         max_requests = 2\n",
    );
    let anyone = RequestSubjects::default();
    // 23:30 in Berlin.
    let late = ts("2026-11-27T22:30:00Z");
    finished(&ledger, &anyone, late, Spent::default()).unwrap();
    finished(&ledger, &anyone, late, Spent::default()).unwrap();
    let refusal = finished(&ledger, &anyone, late, Spent::default()).unwrap_err();
    assert_eq!(refusal.retry_after_s, 30 * 60);
    assert!(
        refusal
            .message
            .ends_with("2 of 2 requests this day; resets at 2026-11-27T23:00:00Z"),
        "{}",
        refusal.message
    );
    // Berlin midnight: a new day.
    let midnight = ts("2026-11-27T23:00:00Z");
    finished(&ledger, &anyone, midnight, Spent::default()).unwrap();
    let reports = ledger.report(midnight, 10);
    let subject = &report(&reports, "berlin").subjects[0];
    assert_eq!(subject.used.requests, 1);
    assert_eq!(subject.resets_at.as_deref(), Some("2026-11-28T23:00:00Z"));
}

#[test]
fn calendar_day_across_the_end_of_daylight_saving_time_in_new_york() {
    let ledger = ledger(
        "[[quotas]]\nname = \"ny\"\nwindow = \"day\"\ntimezone = \"America/New_York\"\n\
         max_requests = 1\n",
    );
    let anyone = RequestSubjects::default();
    // 23:59 EDT on 31 October.
    let before = ts("2026-11-01T03:59:00Z");
    finished(&ledger, &anyone, before, Spent::default()).unwrap();
    assert_eq!(
        finished(&ledger, &anyone, before, Spent::default())
            .unwrap_err()
            .retry_after_s,
        60
    );
    // 1 November lasts 25 hours: from 04:00 UTC (EDT midnight) to 05:00 UTC the next day
    // (EST midnight).
    let first_of_november = ts("2026-11-01T04:00:00Z");
    finished(&ledger, &anyone, first_of_november, Spent::default()).unwrap();
    let refusal = finished(&ledger, &anyone, first_of_november, Spent::default()).unwrap_err();
    assert_eq!(refusal.retry_after_s, 25 * 3600);
    assert!(
        refusal.message.ends_with("resets at 2026-11-02T05:00:00Z"),
        "{}",
        refusal.message
    );
}

#[test]
fn five_hour_block_runs_from_the_hour_of_the_first_request() {
    let ledger = ledger(
        "[[quotas]]\nname = \"block\"\ncaller = \"*\"\nwindow = \"5h\"\nmax_tokens = 1000\n",
    );
    let alice = caller("alice");
    let first = ts("2026-11-27T10:37:00Z");
    finished(&ledger, &alice, first, Spent::new(0.0, 1000, 0)).unwrap();
    let refusal = finished(
        &ledger,
        &alice,
        ts("2026-11-27T14:00:00Z"),
        Spent::default(),
    )
    .unwrap_err();
    assert_eq!(refusal.retry_after_s, 3600);
    assert_eq!(
        refusal.message,
        "quota block reached for alice: 1,000 of 1,000 tokens this 5-hour block; resets at \
         2026-11-27T15:00:00Z"
    );
    // The block ends at 15:00; the next request opens the next one.
    finished(
        &ledger,
        &alice,
        ts("2026-11-27T15:00:00Z"),
        Spent::new(0.0, 999, 0),
    )
    .unwrap();
    let reports = ledger.report(ts("2026-11-27T15:10:00Z"), 10);
    let subject = &report(&reports, "block").subjects[0];
    assert_eq!(subject.used.tokens, 999);
    assert_eq!(subject.resets_at.as_deref(), Some("2026-11-27T20:00:00Z"));
}

#[test]
fn rolling_hour_frees_as_spend_leaves_it() {
    let ledger =
        ledger("[[quotas]]\nname = \"hourly\"\ncaller = \"*\"\nwindow = \"1h\"\nmax_usd = 0.10\n");
    let alice = caller("alice");
    finished(
        &ledger,
        &alice,
        ts("2026-11-27T10:00:00Z"),
        Spent::new(0.06, 0, 0),
    )
    .unwrap();
    finished(
        &ledger,
        &alice,
        ts("2026-11-27T10:30:00Z"),
        Spent::new(0.04, 0, 0),
    )
    .unwrap();
    let refusal = finished(
        &ledger,
        &alice,
        ts("2026-11-27T10:59:59Z"),
        Spent::default(),
    )
    .unwrap_err();
    // The 10:00 spend leaves with its 15-second bucket, at 11:00:15.
    assert_eq!(refusal.retry_after_s, 16);
    assert_eq!(
        refusal.message,
        "quota hourly reached for alice: $0.10 of $0.10 in the last 1h; under the limit again \
         at 2026-11-27T11:00:15Z"
    );
    assert!(finished(
        &ledger,
        &alice,
        ts("2026-11-27T11:00:14Z"),
        Spent::default()
    )
    .is_err());
    assert!(finished(
        &ledger,
        &alice,
        ts("2026-11-27T11:00:15Z"),
        Spent::default()
    )
    .is_ok());
}

#[test]
fn shadow_mode_never_refuses_and_counts_what_it_would_have() {
    let ledger = ledger(
        "[[quotas]]\nname = \"trial\"\ncaller = \"*\"\nwindow = \"day\"\nmax_requests = 2\n\
         mode = \"shadow\"\n",
    );
    let now = ts("2026-11-27T12:00:00Z");
    let mut would = Vec::new();
    for _ in 0..5 {
        let admission = ledger
            .admit(&caller("alice"), now)
            .expect("shadow never refuses");
        would.extend(admission.would_refuse);
    }
    assert_eq!(would.len(), 3);
    assert_eq!(would[0].mode, Mode::Shadow);
    assert!(
        would[0].message.contains("2 of 2 requests this day"),
        "{}",
        would[0].message
    );
    let reports = ledger.report(now, 10);
    let trial = report(&reports, "trial");
    assert_eq!((trial.refused, trial.would_refuse), (0, 3));
    assert_eq!(trial.subjects[0].used.requests, 5);
    assert_eq!(trial.subjects[0].would_refuse, 3);
    assert_eq!(
        ledger.refusals()[0],
        super::QuotaRefusals {
            quota: "trial".into(),
            refused: 0,
            would_refuse: 3
        }
    );
}

#[test]
fn each_caller_has_a_quota_of_their_own() {
    let ledger = ledger(
        "[[quotas]]\nname = \"per-person\"\ncaller = \"*\"\nwindow = \"day\"\nmax_requests = 1\n",
    );
    let now = ts("2026-11-27T12:00:00Z");
    finished(&ledger, &caller("alice"), now, Spent::default()).unwrap();
    assert_eq!(
        finished(&ledger, &caller("alice"), now, Spent::default())
            .unwrap_err()
            .subject,
        "alice"
    );
    finished(&ledger, &caller("bob"), now, Spent::default()).unwrap();
    // Without a caller (no access keys), a per-caller quota does not apply.
    for _ in 0..3 {
        finished(&ledger, &RequestSubjects::default(), now, Spent::default()).unwrap();
    }
    let reports = ledger.report(now, 10);
    assert_eq!(report(&reports, "per-person").subjects_total, 2);
}

#[test]
fn a_project_quota_counts_only_that_project() {
    let ledger = ledger(
        "[[quotas]]\nname = \"atlas\"\nproject = \"atlas\"\nwindow = \"week\"\nmax_usd = 1\n\
         [[quotas]]\nname = \"per-project\"\nproject = \"*\"\nwindow = \"week\"\nmax_usd = 5\n",
    );
    let now = ts("2026-11-27T12:00:00Z");
    let atlas = RequestSubjects {
        caller: Some("alice"),
        project: Some("atlas"),
        ..Default::default()
    };
    let zephyr = RequestSubjects {
        project: Some("zephyr"),
        ..atlas
    };
    finished(&ledger, &atlas, now, Spent::new(1.0, 0, 0)).unwrap();
    let refusal = finished(&ledger, &atlas, now, Spent::default()).unwrap_err();
    assert_eq!(
        (refusal.quota.as_str(), refusal.subject.as_str()),
        ("atlas", "atlas")
    );
    // Monday 2026-11-30 00:00 UTC starts the next week.
    assert_eq!(refusal.retry_after_s, (2 * 24 + 12) * 3600);
    finished(&ledger, &zephyr, now, Spent::new(4.0, 0, 0)).unwrap();
    finished(&ledger, &zephyr, now, Spent::new(1.0, 0, 0)).unwrap();
    let refusal = finished(&ledger, &zephyr, now, Spent::default()).unwrap_err();
    assert_eq!(
        (refusal.quota.as_str(), refusal.subject.as_str()),
        ("per-project", "zephyr")
    );
}

#[test]
fn quotas_by_model_are_judged_once_the_model_is_known() {
    let ledger = ledger(
        "[[quotas]]\nname = \"all\"\nwindow = \"day\"\nmax_requests = 10\n\
         [[quotas]]\nname = \"opus\"\nmodel = \"claude-opus\"\nwindow = \"day\"\nmax_requests = 1\n",
    );
    assert!(ledger.needs_model());
    let now = ts("2026-11-27T12:00:00Z");
    let opus = RequestSubjects {
        model: Some("claude-opus-4-5"),
        ..Default::default()
    };
    let both_stages = |ledger: &Ledger| -> Result<super::QuotaGuard, Refusal> {
        let mut guard = ledger
            .admit_set(
                &RequestSubjects::default(),
                now,
                super::QuotaSet::WithoutModel,
            )?
            .guard;
        assert_eq!(guard.quotas(), ["all"]);
        guard.join(
            ledger
                .admit_set(&opus, now, super::QuotaSet::ByModel)?
                .guard,
        );
        Ok(guard)
    };
    let first = both_stages(&ledger).unwrap();
    assert_eq!(first.quotas(), ["all", "opus"]);
    drop(first);
    // Refused by model: the request path withdraws what the first stage counted.
    let first_stage = ledger
        .admit_set(
            &RequestSubjects::default(),
            now,
            super::QuotaSet::WithoutModel,
        )
        .unwrap()
        .guard;
    let refusal = ledger
        .admit_set(&opus, now, super::QuotaSet::ByModel)
        .err()
        .unwrap();
    first_stage.withdraw();
    assert_eq!(refusal.quota, "opus");
    assert_eq!(refusal.subject, "claude-opus");
    let reports = ledger.report(now, 10);
    let all = &report(&reports, "all").subjects[0];
    assert_eq!((all.used.requests, all.used.in_flight), (1, 0));
    // A sonnet request is outside the opus quota.
    let sonnet = RequestSubjects {
        model: Some("claude-sonnet-4-5"),
        ..Default::default()
    };
    assert!(ledger.admit(&sonnet, now).is_ok());
}

#[test]
fn a_refusal_by_one_quota_is_not_counted_by_the_others() {
    let ledger = ledger(
        "[[quotas]]\nname = \"team\"\nwindow = \"day\"\nmax_requests = 100\nmax_concurrent = 10\n\
         [[quotas]]\nname = \"per-person\"\ncaller = \"*\"\nwindow = \"day\"\nmax_requests = 1\n",
    );
    let now = ts("2026-11-27T12:00:00Z");
    finished(&ledger, &caller("alice"), now, Spent::default()).unwrap();
    for _ in 0..5 {
        let refusal = finished(&ledger, &caller("alice"), now, Spent::default()).unwrap_err();
        assert_eq!(refusal.quota, "per-person");
    }
    let reports = ledger.report(now, 10);
    let team = &report(&reports, "team").subjects[0];
    assert_eq!((team.used.requests, team.used.in_flight), (1, 0));
}

#[test]
fn reload_keeps_spend_of_quotas_that_count_the_same_way() {
    let ledger = ledger(
        "[[quotas]]\nname = \"daily\"\ncaller = \"*\"\nwindow = \"day\"\nmax_usd = 1\n\
         [[quotas]]\nname = \"weekly\"\ncaller = \"*\"\nwindow = \"week\"\nmax_usd = 1\n",
    );
    let now = ts("2026-11-27T12:00:00Z");
    let alice = caller("alice");
    let in_flight = ledger.admit(&alice, now).unwrap();
    finished(&ledger, &alice, now, Spent::new(1.0, 0, 0)).unwrap();
    assert!(finished(&ledger, &alice, now, Spent::default()).is_err());

    // Limits raised; "weekly" becomes monthly (a different window: its spend starts over).
    ledger.apply(
        quotas(
            "[[quotas]]\nname = \"daily\"\ncaller = \"*\"\nwindow = \"day\"\nmax_usd = 2\n\
             [[quotas]]\nname = \"weekly\"\ncaller = \"*\"\nwindow = \"month\"\nmax_usd = 2\n",
        )
        .unwrap(),
    );
    let reports = ledger.report(now, 10);
    let daily = &report(&reports, "daily").subjects[0];
    assert_eq!(daily.used.usd, 1.0);
    assert_eq!(
        daily.used.in_flight, 1,
        "the request in flight is still counted"
    );
    assert_eq!(daily.remaining.usd, Some(1.0));
    assert_eq!(report(&reports, "daily").refused, 1);
    assert_eq!(report(&reports, "weekly").subjects_total, 0);
    // The request admitted before the reload settles into the kept spend and frees its slot.
    in_flight.guard.settle(Spent::new(1.0, 0, 0), now);
    let reports = ledger.report(now, 10);
    let daily = &report(&reports, "daily").subjects[0];
    assert_eq!((daily.used.usd, daily.used.in_flight), (2.0, 0));
    assert!(finished(&ledger, &alice, now, Spent::default()).is_err());
}

#[test]
fn remote_and_stored_spend_counts() {
    let ledger =
        ledger("[[quotas]]\nname = \"daily\"\ncaller = \"*\"\nwindow = \"day\"\nmax_usd = 1\n");
    let now = ts("2026-11-27T12:00:00Z");
    // Loaded from the store at start: yesterday's spend no longer counts, today's does.
    ledger.charge(
        &caller("alice"),
        Spent::new(5.0, 0, 3),
        ts("2026-11-26T23:00:00Z"),
    );
    assert!(ledger.seed(
        "daily",
        "alice",
        ts("2026-11-27T00:00:00Z"),
        Spent::new(0.5, 0, 2)
    ));
    assert!(!ledger.seed("nonexistent", "alice", now, Spent::default()));
    // Another instance's request, seen through the shared store.
    ledger.charge(&caller("alice"), Spent::new(0.5, 0, 1), now);
    let refusal = finished(&ledger, &caller("alice"), now, Spent::default()).unwrap_err();
    assert!(
        refusal.message.contains("$1.00 of $1.00"),
        "{}",
        refusal.message
    );
    let reports = ledger.report(now, 10);
    assert_eq!(report(&reports, "daily").subjects[0].used.requests, 3);
}

#[test]
fn subjects_are_bounded_and_spend_that_counts_is_never_forgotten() {
    let ledger = Ledger::with_subject_cap(
        quotas("[[quotas]]\nname = \"p\"\nproject = \"*\"\nwindow = \"day\"\nmax_usd = 1\n")
            .unwrap(),
        3,
    );
    let now = ts("2026-11-27T12:00:00Z");
    let project = |name| RequestSubjects {
        project: Some(name),
        ..Default::default()
    };
    for name in ["a", "b", "c"] {
        finished(&ledger, &project(name), now, Spent::new(1.0, 0, 0)).unwrap();
    }
    // The table is full of spend that counts: newcomers share one subject, which is limited too.
    finished(&ledger, &project("d"), now, Spent::new(1.0, 0, 0)).unwrap();
    let refusal = finished(&ledger, &project("e"), now, Spent::default()).unwrap_err();
    assert_eq!(refusal.subject, FOLDED_SUBJECT);
    assert!(finished(&ledger, &project("a"), now, Spent::default()).is_err());
    let reports = ledger.report(now, 10);
    assert_eq!(report(&reports, "p").folded, 2);
    // The three projects and "(other)".
    assert_eq!(report(&reports, "p").subjects_total, 4);
    // The next day, spent-out subjects are forgotten to make room.
    let tomorrow = after(now, 86_400);
    finished(&ledger, &project("f"), tomorrow, Spent::new(0.5, 0, 0)).unwrap();
    let reports = ledger.report(tomorrow, 10);
    let p = report(&reports, "p");
    assert_eq!(p.subjects_total, 1);
    assert_eq!(p.subjects[0].subject, "f");
}

#[test]
fn report_lists_subjects_nearest_their_limit_first_and_is_bounded() {
    let ledger =
        ledger("[[quotas]]\nname = \"d\"\ncaller = \"*\"\nwindow = \"day\"\nmax_usd = 10\n");
    let now = ts("2026-11-27T12:00:00Z");
    for (name, usd) in [("low", 1.0), ("high", 9.0), ("mid", 5.0)] {
        finished(&ledger, &caller(name), now, Spent::new(usd, 0, 0)).unwrap();
    }
    let reports = ledger.report(now, 2);
    let d = report(&reports, "d");
    assert_eq!(d.subjects_total, 3);
    let names: Vec<&str> = d.subjects.iter().map(|s| s.subject.as_str()).collect();
    assert_eq!(names, ["high", "mid"]);
    let json = serde_json::to_value(&reports).unwrap();
    assert_eq!(json[0]["subjects"][0]["remaining"]["usd"], 1.0);
    assert_eq!(json[0]["limits"]["usd"], 10.0);
    assert_eq!(json[0]["window"], "day");
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::quotas::window::{Tally, Window};

    proptest! {
        /// Whatever the costs, a request is admitted exactly when the spend before it is under
        /// the limit, and the limit is passed by less than the last request's cost.
        #[test]
        fn spend_limits_are_exact(
            limit_cents in 1u32..2_000,
            costs in proptest::collection::vec(0u32..500_000, 1..200),
        ) {
            let limit = f64::from(limit_cents) / 100.0;
            let ledger = ledger(&format!(
                "[[quotas]]\nname = \"q\"\nwindow = \"month\"\nmax_usd = {limit}\n"
            ));
            let now = ts("2026-11-27T12:00:00Z");
            let limit_nanos = crate::quotas::window::usd_to_nanos(limit);
            let mut used: u64 = 0;
            let mut last_cost: u64 = 0;
            for micro_dollars in costs {
                let spent = Spent::new(f64::from(micro_dollars) / 1e6, 0, 0);
                match finished(&ledger, &RequestSubjects::default(), now, spent) {
                    Ok(()) => {
                        prop_assert!(used < limit_nanos, "admitted at {used} of {limit_nanos}");
                        used += spent.usd_nanos;
                        last_cost = spent.usd_nanos;
                    }
                    Err(_) => prop_assert!(used >= limit_nanos, "refused at {used} of {limit_nanos}"),
                }
            }
            prop_assert!(used < limit_nanos + last_cost.max(1));
        }

        /// A rolling window never counts less than the spend of the last window, and never more
        /// than that of the last window plus one bucket.
        #[test]
        fn rolling_windows_are_late_by_at_most_one_bucket(
            hours in 1i64..=720,
            events in proptest::collection::vec((0i64..4_000_000, 1u32..1_000, 0i64..4_000_000), 1..60),
        ) {
            // "5h" is the 5-hour block, not a rolling window.
            prop_assume!(hours != 5);
            let window = Window::parse(&format!("{hours}h")).unwrap();
            let seconds = hours * 3600;
            let width = seconds / crate::quotas::window::ROLLING_BUCKETS;
            let utc = jiff::tz::TimeZone::UTC;
            let base = ts("2026-01-01T00:00:00Z").as_second();
            let mut events = events;
            events.sort_by_key(|e| e.0);
            let mut tally = Tally::new(window);
            let mut added: Vec<(i64, u64)> = Vec::new();
            for (offset, nanos, delay) in events {
                let at = base + offset;
                tally.add(window, &utc, Timestamp::from_second(at).unwrap(), Spent { usd_nanos: u64::from(nanos), tokens: 0, requests: 0 });
                added.push((at, u64::from(nanos)));
                let query = at + delay;
                let counted = tally.standing(window, &utc, Timestamp::from_second(query).unwrap()).spent.usd_nanos;
                let within = |span: i64| -> u64 {
                    added.iter().filter(|(t, _)| *t > query - span && *t <= query).map(|(_, n)| n).sum()
                };
                prop_assert!(counted >= within(seconds), "{counted} < {}", within(seconds));
                prop_assert!(counted <= within(seconds + width), "{counted} > {}", within(seconds + width));
            }
        }
    }
}

#[test]
fn a_socket_holds_a_slot_and_each_turn_on_it_counts_as_a_request() {
    use super::ledger::{Claim, QuotaSet};
    let ledger = ledger(
        "[[quotas]]\nname = \"two\"\ncaller = \"*\"\nwindow = \"day\"\nmax_requests = 2\nmax_concurrent = 1\n",
    );
    let now = ts("2026-11-27T10:00:00Z");
    let alice = caller("alice");
    let claim = |c| ledger.admit_claim(&alice, now, QuotaSet::All, c);
    let socket = claim(Claim::Socket).expect("the socket takes the one slot");
    // A second socket (or a request) finds the slot taken…
    assert!(claim(Claim::Socket).is_err());
    assert!(ledger.admit(&alice, now).is_err());
    // …but turns on the open socket are judged on the windowed limits only.
    claim(Claim::Turn)
        .expect("first turn")
        .guard
        .settle(Spent::default(), now);
    let second = claim(Claim::Turn).expect("second turn");
    let Err(refused) = claim(Claim::Turn) else {
        panic!("a third turn passes max_requests");
    };
    assert!(refused.message.contains("requests"), "{}", refused.message);
    second.guard.withdraw();
    claim(Claim::Turn)
        .expect("a withdrawn turn gave its request back")
        .guard
        .settle(Spent::default(), now);
    drop(socket);
    let report = ledger.report(now, 10);
    let used = &report[0].subjects[0].used;
    assert_eq!(used.in_flight, 0, "the slot is free once the socket ends");
    assert_eq!(used.requests, 2, "the socket itself is not a request");
}
