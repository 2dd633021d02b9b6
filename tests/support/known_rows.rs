//! A month of realistic team traffic with every figure known in advance: several models, callers,
//! projects, sessions and agents, errors, streams, cache tokens and web searches, spread over 30
//! days with more in the last 24 hours. The dashboard's browser test and the `sluice report`
//! tests fill a store with these rows and compare what they show with sums computed from the rows
//! themselves, never with sluice's own `/usage`.
//!
//! Costs are worked out here from the token counts with the prices below, so they do not depend on
//! sluice's price table either.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice::credentials::CredentialSource;
use sluice::metrics::{Finished, Outcome, RequestRecord};
use sluice::usage::Usage;

/// A small deterministic generator, so that the same seed and `now` give the same rows.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// USD per million tokens: input, output, 5-minute cache write, 1-hour cache write, cache read.
fn prices(model: &str) -> [f64; 5] {
    match model {
        "claude-opus-4-5" => [5.0, 25.0, 6.25, 10.0, 0.5],
        "claude-haiku-4-5" => [1.0, 5.0, 1.25, 2.0, 0.1],
        _ => [3.0, 15.0, 3.75, 6.0, 0.3],
    }
}

/// USD per web search.
const WEB_SEARCH_USD: f64 = 0.01;

/// The cost of one answer, from its token counts.
pub fn cost_of(model: &str, usage: &Usage) -> f64 {
    let [input, output, write_5m, write_1h, read] = prices(model);
    let cache_1h = usage.cache_creation_1h_input_tokens.unwrap_or(0);
    let cache_5m = usage.cache_creation_input_tokens - cache_1h;
    (usage.input_tokens as f64 * input
        + usage.output_tokens as f64 * output
        + cache_5m as f64 * write_5m
        + cache_1h as f64 * write_1h
        + usage.cache_read_input_tokens as f64 * read)
        / 1e6
        + usage.web_search_requests as f64 * WEB_SEARCH_USD
}

/// Who sends the traffic: name, credential (`<source>:<fingerprint>`), its source, projects.
struct Caller {
    name: &'static str,
    credential: &'static str,
    source: CredentialSource,
    projects: &'static [&'static str],
    /// Percent of its requests that go to Opus.
    opus: u64,
    /// The agent or SDK it sends with (`by_client`).
    client: &'static str,
}

const CALLERS: [Caller; 4] = [
    Caller {
        name: "alice",
        credential: "client_oauth:7c1e4f9a2b30",
        source: CredentialSource::ClientOauth,
        projects: &["sluice", "web-app"],
        opus: 35,
        client: "claude-code",
    },
    Caller {
        name: "bob",
        credential: "client_oauth:d94a0b6e1f52",
        source: CredentialSource::ClientOauth,
        projects: &["web-app", "mobile"],
        opus: 10,
        client: "claude-code",
    },
    Caller {
        name: "carol",
        credential: "client_api_key:51be3a7c9d08",
        source: CredentialSource::ClientApiKey,
        projects: &["data-pipeline", "sluice"],
        opus: 5,
        client: "anthropic-sdk-python",
    },
    Caller {
        name: "ci-bot",
        credential: "server_key:a03f66d2c417",
        source: CredentialSource::ServerKey,
        projects: &[""],
        opus: 0,
        client: "anthropic-sdk-node",
    },
];

fn hex(rng: &mut Rng, digits: usize) -> String {
    let mut out = String::with_capacity(digits);
    for _ in 0..digits {
        out.push(char::from_digit(rng.below(16) as u32, 16).unwrap());
    }
    out
}

/// One request of a session at `at`.
fn request(
    rng: &mut Rng,
    caller: &Caller,
    project: &str,
    session: &str,
    agent: Option<&str>,
    at: SystemTime,
) -> Finished {
    let roll = rng.below(100);
    let model = if roll < caller.opus {
        "claude-opus-4-5"
    } else if roll < caller.opus + 22 {
        "claude-haiku-4-5"
    } else {
        "claude-sonnet-4-5"
    };
    let haiku = model == "claude-haiku-4-5";
    let streamed = caller.name != "ci-bot" && !rng.chance(8);
    let (status, outcome) = match rng.below(1000) {
        0..=14 => (529, Outcome::Completed),
        15..=24 => (429, Outcome::Completed),
        25..=29 => (500, Outcome::Completed),
        30..=34 if streamed => (200, Outcome::UpstreamErrorEvent),
        35..=44 if streamed => (200, Outcome::ClientGone),
        _ => (200, Outcome::Completed),
    };
    let mut usage = Usage::default();
    if status == 200 {
        usage.input_tokens = if haiku {
            rng.between(200, 3_000)
        } else {
            rng.between(3, 2_500)
        };
        usage.output_tokens = if haiku {
            rng.between(20, 400)
        } else {
            rng.between(40, 3_200)
        };
        if outcome == Outcome::ClientGone {
            usage.output_tokens /= 3;
        }
        if !haiku {
            usage.cache_read_input_tokens = rng.between(8_000, 160_000);
            if rng.chance(40) {
                let written = rng.between(500, 12_000);
                usage.cache_creation_input_tokens = written;
                if rng.chance(25) {
                    usage.cache_creation_1h_input_tokens = Some(written / 2);
                    usage.cache_creation_5m_input_tokens = Some(written - written / 2);
                }
            }
            if rng.chance(4) {
                usage.web_search_requests = rng.between(1, 3);
            }
        }
    }
    let cost = cost_of(model, &usage);
    let ttfb = Duration::from_millis(rng.between(350, 2_400));
    let total = ttfb + Duration::from_millis(usage.output_tokens * rng.between(8, 20));
    let some = |text: &str| (!text.is_empty()).then(|| text.to_string());
    let record = RequestRecord {
        request_id: format!("req_{}", hex(rng, 16)),
        finished_at: at,
        route: "/anthropic".into(),
        method: "POST".into(),
        path: "/anthropic/v1/messages".into(),
        status,
        model: Some(model.into()),
        source: Some(caller.source),
        credential: Some(caller.credential.into()),
        caller: Some(caller.name.into()),
        session: some(session),
        agent: agent.map(str::to_string),
        parent_agent: agent.map(|_| format!("main-{session}")),
        project: some(project),
        provider: Some("anthropic"),
        client: Some(caller.client),
        usage,
        usage_missing: false,
        priced_usd: None,
        streamed,
        estimated: false,
        outcome,
        ttfb: Some(ttfb),
        total,
        overhead: Some(Duration::from_millis(rng.between(0, 3))),
        upstream_failure: None,
        rate_limits: Vec::new(),
        request_model: Some(model.into()),
        trace_parent: None,
    };
    Finished {
        record,
        cost: Some(cost),
    }
}

/// A session: a burst of requests from one caller on one project, some by subagents.
fn session(rng: &mut Rng, out: &mut Vec<Finished>, start: SystemTime, latest: SystemTime) {
    let caller = &CALLERS[rng.below(3) as usize];
    let project = caller.projects[rng.below(caller.projects.len() as u64) as usize];
    let id = format!("{}-{}-4{}", hex(rng, 8), hex(rng, 4), hex(rng, 3));
    let agents = [
        format!("task-{}", hex(rng, 6)),
        format!("task-{}", hex(rng, 6)),
    ];
    let mut at = start;
    for _ in 0..rng.between(6, 32) {
        at += Duration::from_secs(rng.between(12, 240));
        if at > latest {
            break;
        }
        let agent = match rng.below(10) {
            0 | 1 => Some(agents[0].as_str()),
            2 => Some(agents[1].as_str()),
            _ => None,
        };
        out.push(request(rng, caller, project, &id, agent, at));
    }
}

/// The rows for a store read at about `now`: all finished at least a minute before `now`, the
/// oldest 30 days before; in time order.
pub fn known_requests(now: SystemTime, seed: u64) -> Vec<Finished> {
    let mut rng = Rng::new(seed);
    let latest = now - Duration::from_secs(60);
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let day = 86_400;
    let midnight = now_s - now_s % day;
    let mut out = Vec::new();
    for days_ago in (1..30).rev() {
        let date = midnight - days_ago * day;
        // 1970-01-01 was a Thursday: days 2 and 3 after it are the weekend.
        let weekend = matches!((date / day) % 7, 2 | 3);
        let sessions = if weekend {
            rng.between(0, 2)
        } else {
            rng.between(3, 7)
        };
        for _ in 0..sessions {
            let start = date + rng.between(7 * 3600, 19 * 3600);
            session(
                &mut rng,
                &mut out,
                UNIX_EPOCH + Duration::from_secs(start),
                latest,
            );
        }
        for _ in 0..rng.between(6, 14) {
            let at = date + rng.below(day);
            let ci = &CALLERS[3];
            out.push(request(
                &mut rng,
                ci,
                "",
                "",
                None,
                UNIX_EPOCH + Duration::from_secs(at),
            ));
        }
    }
    // The last day: a busy team.
    for _ in 0..14 {
        let start = now_s - rng.between(30 * 60, 23 * 3600);
        session(
            &mut rng,
            &mut out,
            UNIX_EPOCH + Duration::from_secs(start),
            latest,
        );
    }
    for _ in 0..30 {
        let at = now_s - rng.between(120, day - 120);
        let ci = &CALLERS[3];
        out.push(request(
            &mut rng,
            ci,
            "",
            "",
            None,
            UNIX_EPOCH + Duration::from_secs(at),
        ));
    }
    out.retain(|f| f.record.finished_at <= latest);
    out.sort_by_key(|f| f.record.finished_at);
    out
}
