use super::*;
use crate::usage::Tokens;

fn price(input: f64, output: f64, cache_write: f64, cache_read: f64) -> Price {
    Price::new(input, output, cache_write, cache_read)
}

fn sonnet() -> Price {
    price(3.0, 15.0, 3.75, 0.30)
}

/// Sonnet 4.5 as Anthropic prices it: long context over 200K prompt tokens.
fn sonnet_long_context() -> Price {
    Price {
        cache_write_1h: Some(6.0),
        long_context: Some(LongContext {
            threshold: 200_000,
            input: 6.0,
            output: 22.5,
            cache_write: 7.5,
            cache_write_1h: Some(12.0),
            cache_read: 0.6,
        }),
        ..sonnet()
    }
}

fn table(entries: &[(&str, Price)]) -> PriceTable {
    PriceTable::new(
        entries
            .iter()
            .map(|(prefix, price)| (prefix.to_string(), price.clone()))
            .collect(),
    )
}

fn tokens(input: u64, output: u64, cache_write: u64, cache_read: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_creation_input_tokens: cache_write,
        cache_read_input_tokens: cache_read,
        ..Usage::default()
    }
}

fn assert_usd(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected} USD, got {actual}"
    );
}

#[test]
fn longest_matching_prefix_wins() {
    let prices = table(&[
        ("claude-opus-4", price(15.0, 75.0, 18.75, 1.5)),
        ("claude-opus-4-5", price(5.0, 25.0, 6.25, 0.5)),
        ("claude", price(1.0, 1.0, 1.0, 1.0)),
    ]);
    let (key, found) = prices.lookup("claude-opus-4-5-20251101").unwrap();
    assert_eq!(key, "claude-opus-4-5");
    assert_eq!(found.input, 5.0);
    assert_eq!(
        prices.lookup("claude-opus-4-1-20250805").unwrap().0,
        "claude-opus-4"
    );
    assert_eq!(prices.lookup("claude-haiku-4-5").unwrap().0, "claude");
}

/// The ordered search finds what testing every key finds: random tables and models over a
/// small alphabet (so that keys share prefixes, and with a two-byte letter), the empty key
/// included.
#[test]
fn lookup_finds_the_longest_prefix_that_testing_every_key_finds() {
    let alphabet = ["a", "b", "-", "4", "é"];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let word = |next: &mut dyn FnMut(u64) -> u64| {
        let len = next(7);
        (0..len)
            .map(|_| alphabet[next(5) as usize])
            .collect::<String>()
    };
    for _ in 0..300 {
        let keys: Vec<String> = (0..next(12)).map(|_| word(&mut next)).collect();
        let prices = table(
            &keys
                .iter()
                .map(|key| (key.as_str(), sonnet()))
                .collect::<Vec<_>>(),
        );
        for _ in 0..40 {
            let model = word(&mut next);
            let every_key = keys
                .iter()
                .filter(|key| model.starts_with(key.as_str()))
                .max_by_key(|key| key.len())
                .map(String::as_str);
            assert_eq!(
                prices.lookup(&model).map(|(key, _)| key),
                every_key,
                "{model:?} in {keys:?}"
            );
        }
    }
}

#[test]
fn key_longer_than_model_or_not_a_prefix_does_not_match() {
    let prices = table(&[("claude-sonnet-4-5", sonnet())]);
    assert_eq!(prices.lookup("claude-sonnet-4"), None);
    assert_eq!(prices.lookup("xclaude-sonnet-4-5"), None);
    assert_eq!(prices.lookup("Claude-Sonnet-4-5"), None);
    assert_eq!(
        prices.lookup("claude-sonnet-4-5").unwrap().0,
        "claude-sonnet-4-5"
    );
}

#[test]
fn unknown_or_missing_model_has_no_cost() {
    let prices = table(&[("claude-sonnet-4-5", sonnet())]);
    let usage = tokens(100, 0, 0, 0);
    assert_eq!(prices.cost_usd(Some("gpt-4o"), &usage), None);
    assert_eq!(prices.cost_usd(None, &usage), None);
    assert_eq!(PriceTable::default().cost_usd(Some("claude"), &usage), None);
    assert!(PriceTable::default().is_empty());
}

#[test]
fn cost_sums_every_kind_of_token_per_million() {
    let prices = table(&[("claude-sonnet-4-5", sonnet())]);
    let usage = tokens(1_000_000, 2_000_000, 1_000_000, 10_000_000);
    let cost = prices
        .cost_usd(Some("claude-sonnet-4-5-20250929"), &usage)
        .unwrap();
    // 1M × 3 + 2M × 15 + 1M × 3.75 + 10M × 0.30
    assert_usd(cost, 3.0 + 30.0 + 3.75 + 3.0);
}

#[test]
fn cache_writes_without_split_are_charged_at_cache_write() {
    assert_usd(sonnet().cost_usd(&tokens(0, 0, 2_000_000, 0)), 7.5);
}

#[test]
fn cache_write_split_charges_each_lifetime_at_its_price() {
    let with_1h_price = Price {
        cache_write_1h: Some(6.0),
        ..sonnet()
    };
    let usage = Usage {
        cache_creation_5m_input_tokens: Some(1_000_000),
        cache_creation_1h_input_tokens: Some(2_000_000),
        ..tokens(0, 0, 3_000_000, 0)
    };
    // 1M × 3.75 + 2M × 6
    assert_usd(with_1h_price.cost_usd(&usage), 3.75 + 12.0);
}

#[test]
fn one_hour_cache_write_defaults_to_twice_input() {
    assert_eq!(sonnet().cache_write_1h(), 6.0);
    let usage = Usage {
        cache_creation_5m_input_tokens: Some(0),
        cache_creation_1h_input_tokens: Some(1_000_000),
        ..tokens(0, 0, 1_000_000, 0)
    };
    assert_usd(sonnet().cost_usd(&usage), 6.0);
}

#[test]
fn cache_writes_not_covered_by_split_are_charged_at_cache_write() {
    let usage = Usage {
        cache_creation_1h_input_tokens: Some(1_000_000),
        ..tokens(0, 0, 4_000_000, 0)
    };
    // 1M at the 1-hour price (2 × 3.0), the other 3M at cache_write.
    assert_usd(sonnet().cost_usd(&usage), 6.0 + 3.0 * 3.75);
}

#[test]
fn split_larger_than_total_is_charged_as_given() {
    let usage = Usage {
        cache_creation_5m_input_tokens: Some(1_000_000),
        cache_creation_1h_input_tokens: Some(1_000_000),
        ..Usage::default()
    };
    assert_usd(sonnet().cost_usd(&usage), 3.75 + 6.0);
}

#[test]
fn web_searches_cost_ten_dollars_per_thousand_by_default() {
    let usage = Usage {
        web_search_requests: 2,
        ..tokens(1000, 100, 0, 0)
    };
    // 1000 × 3 / 1M + 100 × 15 / 1M + 2 × 10 / 1000
    assert_usd(sonnet().cost_usd(&usage), 0.003 + 0.0015 + 0.02);
    let dearer = Price {
        web_search_per_1k: Some(25.0),
        ..sonnet()
    };
    assert_usd(dearer.cost_usd(&usage), 0.003 + 0.0015 + 0.05);
}

#[test]
fn long_context_charges_every_token_at_the_long_rates_once_over_the_threshold() {
    // The 250,000-input-token Sonnet 4.5 request: 250,000 × 6 / 1M + 2,000 × 22.5 / 1M
    // = 1.5 + 0.045 = 1.545 (0.78 at the standard rates: 0.75 + 0.03).
    let usage = tokens(250_000, 2_000, 0, 0);
    assert_usd(sonnet_long_context().cost_usd(&usage), 1.545);
    assert_usd(sonnet().cost_usd(&usage), 0.78);
}

#[test]
fn long_context_threshold_counts_cache_writes_and_reads() {
    // 100,000 input + 60,000 cache write (40,000 of them 1-hour) + 50,000 cache read
    // = 210,000 > 200,000: input 100,000 × 6 + 5m 20,000 × 7.5 + 1h 40,000 × 12
    // + read 50,000 × 0.6 + output 1,000 × 22.5 = 0.6 + 0.15 + 0.48 + 0.03 + 0.0225
    let usage = Usage {
        cache_creation_5m_input_tokens: Some(20_000),
        cache_creation_1h_input_tokens: Some(40_000),
        ..tokens(100_000, 1_000, 60_000, 50_000)
    };
    assert_usd(sonnet_long_context().cost_usd(&usage), 1.2825);
}

#[test]
fn prompt_at_the_threshold_is_not_long_context() {
    // Exactly 200,000: 200,000 × 3 / 1M = 0.6
    let usage = tokens(150_000, 0, 0, 50_000);
    // 150,000 × 3 + 50,000 × 0.3 = 0.45 + 0.015
    assert_usd(sonnet_long_context().cost_usd(&usage), 0.465);
    let over = tokens(150_001, 0, 0, 50_000);
    // 150,001 × 6 + 50,000 × 0.6 = 0.900006 + 0.03
    assert_usd(sonnet_long_context().cost_usd(&over), 0.930006);
}

#[test]
fn batch_results_cost_half_and_stack_with_long_context() {
    let batch = sonnet_long_context().with_defaults(&PricingDefaults::default());
    // Half of 1.545 (the long-context example above).
    assert_usd(
        cost_usd(&batch, &tokens(250_000, 2_000, 0, 0), true),
        0.7725,
    );
    // Half of 1000 × 3 / 1M.
    assert_usd(cost_usd(&batch, &tokens(1000, 0, 0, 0), true), 0.0015);
    assert_usd(cost_usd(&batch, &tokens(1000, 0, 0, 0), false), 0.003);
}

#[test]
fn inference_geo_and_speed_multiply_token_cost_not_searches() {
    let opus = Price {
        cache_write_1h: Some(10.0),
        speed: BTreeMap::from([("fast".to_string(), 6.0)]),
        inference_geo: BTreeMap::from([("us".to_string(), 1.1)]),
        ..price(5.0, 25.0, 6.25, 0.5)
    };
    let usage = Usage {
        inference_geo: Some("us".into()),
        speed: Some("fast".into()),
        web_search_requests: 1,
        ..tokens(10_000, 1_000, 0, 100_000)
    };
    // (10,000 × 5 + 1,000 × 25 + 100,000 × 0.5) / 1M = 0.125; × 6 × 1.1 = 0.825; + 0.01
    assert_usd(opus.cost_usd(&usage), 0.835);
    let global = Usage {
        inference_geo: Some("global".into()),
        speed: Some("standard".into()),
        ..usage.clone()
    };
    assert_usd(opus.cost_usd(&global), 0.135);
}

#[test]
fn fast_mode_is_priced_flat_over_the_whole_context() {
    let fast_long = Price {
        speed: BTreeMap::from([("fast".to_string(), 2.0)]),
        ..sonnet_long_context()
    };
    let usage = Usage {
        speed: Some("fast".into()),
        ..tokens(250_000, 0, 0, 0)
    };
    // 250,000 × 3 / 1M × 2, not the long-context 6.
    assert_usd(fast_long.cost_usd(&usage), 1.5);
}

#[test]
fn compaction_iterations_are_priced_one_by_one() {
    // The compaction read 180,000 tokens, the answer 23,000: together 203,000, but neither
    // sampling passes 200,000, so both are at the standard rates.
    let usage = Usage {
        iterations: vec![
            Tokens {
                input_tokens: 180_000,
                output_tokens: 3_500,
                ..Tokens::default()
            },
            Tokens {
                input_tokens: 23_000,
                output_tokens: 1_000,
                ..Tokens::default()
            },
        ],
        ..tokens(203_000, 4_500, 0, 0)
    };
    // 203,000 × 3 / 1M + 4,500 × 15 / 1M = 0.609 + 0.0675
    assert_usd(sonnet_long_context().cost_usd(&usage), 0.6765);
}

#[test]
fn defaults_fill_what_a_price_leaves_unset() {
    let defaults = PricingDefaults {
        web_search_per_1k: 12.0,
        batch: 0.4,
        inference_geo: BTreeMap::from([("us".to_string(), 1.1), ("eu".to_string(), 1.2)]),
        speed: BTreeMap::from([("fast".to_string(), 3.0)]),
        service_tier: BTreeMap::new(),
    };
    let own = Price {
        batch: Some(0.5),
        inference_geo: BTreeMap::from([("us".to_string(), 1.0)]),
        ..sonnet()
    }
    .with_defaults(&defaults);
    assert_eq!(own.web_search_per_1k, Some(12.0));
    assert_eq!(own.batch, Some(0.5));
    assert_eq!(own.inference_geo["us"], 1.0);
    assert_eq!(own.inference_geo["eu"], 1.2);
    assert_eq!(own.speed["fast"], 3.0);
}

#[test]
fn validate_rejects_negative_and_non_finite_prices_naming_the_field() {
    assert_eq!(sonnet().validate(), Ok(()));
    assert_eq!(sonnet_long_context().validate(), Ok(()));
    assert_eq!(price(0.0, 0.0, 0.0, 0.0).validate(), Ok(()));
    let long = |change: fn(&mut LongContext)| {
        let mut price = sonnet_long_context();
        change(price.long_context.as_mut().unwrap());
        price
    };
    let bad = [
        (price(-1.0, 15.0, 3.75, 0.3), "input"),
        (price(3.0, f64::NAN, 3.75, 0.3), "output"),
        (price(3.0, 15.0, f64::INFINITY, 0.3), "cache_write"),
        (price(3.0, 15.0, 3.75, f64::NEG_INFINITY), "cache_read"),
        (
            Price {
                cache_write_1h: Some(-0.5),
                ..sonnet()
            },
            "cache_write_1h",
        ),
        (long(|l| l.threshold = 0), "long_context.threshold"),
        (long(|l| l.output = -2.0), "long_context.output"),
        (
            long(|l| l.cache_write_1h = Some(f64::NAN)),
            "long_context.cache_write_1h",
        ),
        (
            Price {
                web_search_per_1k: Some(-10.0),
                ..sonnet()
            },
            "web_search_per_1k",
        ),
        (
            Price {
                batch: Some(f64::NAN),
                ..sonnet()
            },
            "batch",
        ),
        (
            Price {
                speed: BTreeMap::from([("fast".to_string(), -6.0)]),
                ..sonnet()
            },
            "speed.fast",
        ),
        (
            Price {
                inference_geo: BTreeMap::from([("us".to_string(), f64::INFINITY)]),
                ..sonnet()
            },
            "inference_geo.us",
        ),
    ];
    for (price, name) in bad {
        let error = price.validate().unwrap_err();
        assert_eq!(error.field, name, "{error}");
        assert!(error.reason.starts_with("must be"), "{error}");
    }
    let defaults = PricingDefaults {
        batch: -0.5,
        ..PricingDefaults::default()
    };
    assert_eq!(defaults.validate().unwrap_err().field, "batch");
}

#[test]
fn price_reads_from_settings_and_rejects_unknown_fields() {
    let read: Price =
        serde_json::from_str(r#"{"input":3.0,"output":15.0,"cache_write":3.75,"cache_read":0.3}"#)
            .unwrap();
    assert_eq!(read, sonnet());
    let full: Price = serde_json::from_str(
        r#"{"input":3.0,"output":15.0,"cache_write":3.75,"cache_write_1h":6.0,"cache_read":0.3,
            "long_context":{"threshold":200000,"input":6.0,"output":22.5,"cache_write":7.5,
                            "cache_write_1h":12.0,"cache_read":0.6}}"#,
    )
    .unwrap();
    assert_eq!(full, sonnet_long_context());
    for unknown in [
        r#"{"input":3.0,"output":15.0,"cache_write":3.75,"cache_read":0.3,"cache_wrte":1}"#,
        r#"{"input":3.0,"output":15.0,"cache_write":3.75,"cache_read":0.3,
            "long_context":{"threshold":1,"input":1,"output":1,"cache_write":1,"cache_read":1,"x":1}}"#,
    ] {
        assert!(serde_json::from_str::<Price>(unknown).is_err(), "{unknown}");
    }
}

/// One row of the built-in table as the sources give it (USD per million tokens; fast = the
/// fast-mode multiplier, none when the model has no fast mode).
struct Expected {
    model: &'static str,
    input: f64,
    output: f64,
    cache_write_5m: f64,
    cache_write_1h: f64,
    cache_read: f64,
    /// (threshold, input, output, 5m write, 1h write, read)
    long_context: Option<(u64, f64, f64, f64, f64, f64)>,
    fast: Option<f64>,
}

const fn row(
    model: &'static str,
    [input, output, cache_write_5m, cache_write_1h, cache_read]: [f64; 5],
) -> Expected {
    Expected {
        model,
        input,
        output,
        cache_write_5m,
        cache_write_1h,
        cache_read,
        long_context: None,
        fast: None,
    }
}

/// Every model id the sources list, dated ids included, with its prices from Anthropic's
/// pricing page and model pages (2026-11-27) and LiteLLM's table.
fn sources() -> Vec<Expected> {
    const SONNET_LONG: Option<(u64, f64, f64, f64, f64, f64)> =
        Some((200_000, 6.0, 22.5, 7.5, 12.0, 0.6));
    vec![
        row("claude-fable-5-1", [10.0, 50.0, 12.5, 20.0, 0.25]),
        row("claude-mythos-5-1", [10.0, 50.0, 12.5, 20.0, 0.25]),
        row("claude-fable-5", [10.0, 50.0, 12.5, 20.0, 1.0]),
        row("claude-mythos-5", [10.0, 50.0, 12.5, 20.0, 1.0]),
        Expected {
            fast: Some(2.0),
            ..row("claude-opus-5-5", [4.0, 20.0, 5.0, 8.0, 0.2])
        },
        Expected {
            fast: Some(2.0),
            ..row("claude-opus-5", [5.0, 25.0, 6.25, 10.0, 0.5])
        },
        Expected {
            fast: Some(2.0),
            ..row("claude-opus-4-8", [5.0, 25.0, 6.25, 10.0, 0.5])
        },
        Expected {
            fast: Some(6.0),
            ..row("claude-opus-4-7", [5.0, 25.0, 6.25, 10.0, 0.5])
        },
        Expected {
            fast: Some(6.0),
            ..row("claude-opus-4-7-20260416", [5.0, 25.0, 6.25, 10.0, 0.5])
        },
        Expected {
            fast: Some(6.0),
            ..row("claude-opus-4-6", [5.0, 25.0, 6.25, 10.0, 0.5])
        },
        Expected {
            fast: Some(6.0),
            ..row("claude-opus-4-6-20260205", [5.0, 25.0, 6.25, 10.0, 0.5])
        },
        row("claude-opus-4-5", [5.0, 25.0, 6.25, 10.0, 0.5]),
        row("claude-opus-4-5-20251101", [5.0, 25.0, 6.25, 10.0, 0.5]),
        row("claude-opus-4-1", [15.0, 75.0, 18.75, 30.0, 1.5]),
        row("claude-opus-4-1-20250805", [15.0, 75.0, 18.75, 30.0, 1.5]),
        row("claude-opus-4-0", [15.0, 75.0, 18.75, 30.0, 1.5]),
        row("claude-opus-4-20250514", [15.0, 75.0, 18.75, 30.0, 1.5]),
        row("claude-sonnet-5-5", [2.0, 10.0, 2.5, 4.0, 0.1]),
        row("claude-sonnet-5", [2.0, 10.0, 2.5, 4.0, 0.2]),
        row("claude-sonnet-4-6", [3.0, 15.0, 3.75, 6.0, 0.3]),
        Expected {
            long_context: SONNET_LONG,
            ..row("claude-sonnet-4-5", [3.0, 15.0, 3.75, 6.0, 0.3])
        },
        Expected {
            long_context: SONNET_LONG,
            ..row("claude-sonnet-4-5-20250929", [3.0, 15.0, 3.75, 6.0, 0.3])
        },
        Expected {
            long_context: SONNET_LONG,
            ..row("claude-sonnet-4-20250514", [3.0, 15.0, 3.75, 6.0, 0.3])
        },
        Expected {
            long_context: SONNET_LONG,
            ..row("claude-sonnet-4-0", [3.0, 15.0, 3.75, 6.0, 0.3])
        },
        row("claude-3-7-sonnet-20250219", [3.0, 15.0, 3.75, 6.0, 0.3]),
        Expected {
            long_context: Some((100_000, 0.5, 2.5, 0.625, 1.0, 0.05)),
            ..row("claude-haiku-5-5", [0.1, 0.5, 0.125, 0.2, 0.01])
        },
        row("claude-haiku-4-5", [1.0, 5.0, 1.25, 2.0, 0.1]),
        row("claude-haiku-4-5-20251001", [1.0, 5.0, 1.25, 2.0, 0.1]),
        row("claude-3-5-haiku-20241022", [0.8, 4.0, 1.0, 1.6, 0.08]),
        row("claude-3-haiku-20240307", [0.25, 1.25, 0.3, 0.5, 0.03]),
    ]
}

/// The model's built-in token rates and long-context rates are `expected`'s; its price, for the
/// checks that follow.
fn assert_rates<'p>(prices: &'p PriceTable, expected: &Expected) -> &'p Price {
    let model = expected.model;
    let (_, price) = prices
        .lookup(model)
        .unwrap_or_else(|| panic!("{model} has no built-in price"));
    let actual = [
        price.input,
        price.output,
        price.cache_write,
        price.cache_write_1h(),
        price.cache_read,
    ];
    let wanted = [
        expected.input,
        expected.output,
        expected.cache_write_5m,
        expected.cache_write_1h,
        expected.cache_read,
    ];
    assert_eq!(actual, wanted, "{model}");
    let long = price.long_context.as_ref().map(|long| {
        let rates = long.rates();
        (
            long.threshold,
            rates.input,
            rates.output,
            rates.cache_write_5m,
            rates.cache_write_1h,
            rates.cache_read,
        )
    });
    assert_eq!(long, expected.long_context, "{model} long context");
    price
}

#[test]
fn every_built_in_model_is_priced_as_its_sources_say() {
    let prices = PriceTable::new(crate::settings::default_pricing());
    for expected in sources() {
        let (model, price) = (expected.model, assert_rates(&prices, &expected));
        assert_eq!(
            price.speed.get("fast").copied(),
            expected.fast,
            "{model} fast"
        );
        assert_eq!(price.web_search_per_1k, Some(10.0), "{model} web search");
        assert_eq!(price.batch, Some(0.5), "{model} batch");
        assert_eq!(price.inference_geo.get("us"), Some(&1.1), "{model} geo");
    }
}

/// OpenAI's models as the sources in settings/sluice.toml list them: standard input, cached
/// input and output per million tokens, the priority multiple of the standard rates, and the
/// long-context rates (input, cached, output) over 272K input tokens.
type OpenAiRow = (&'static str, [f64; 3], Option<f64>, Option<[f64; 3]>);

fn openai_sources() -> Vec<OpenAiRow> {
    vec![
        (
            "gpt-5.5",
            [5.0, 0.5, 30.0],
            Some(2.5),
            Some([10.0, 1.0, 45.0]),
        ),
        (
            "gpt-5.5-2026-04-23",
            [5.0, 0.5, 30.0],
            Some(2.5),
            Some([10.0, 1.0, 45.0]),
        ),
        (
            "gpt-5.4",
            [2.5, 0.25, 15.0],
            Some(2.0),
            Some([5.0, 0.5, 22.5]),
        ),
        (
            "gpt-5.4-2026-03-05",
            [2.5, 0.25, 15.0],
            Some(2.0),
            Some([5.0, 0.5, 22.5]),
        ),
        ("gpt-5.5-pro", [30.0, 30.0, 180.0], None, None),
        ("gpt-5.4-pro", [30.0, 30.0, 180.0], None, None),
        ("gpt-5.4-mini", [0.75, 0.075, 4.5], Some(2.0), None),
        (
            "gpt-5.4-mini-2026-03-17",
            [0.75, 0.075, 4.5],
            Some(2.0),
            None,
        ),
        ("gpt-5.4-nano", [0.2, 0.02, 1.25], None, None),
        ("gpt-5.3-codex", [1.75, 0.175, 14.0], None, None),
        ("gpt-5.2", [1.75, 0.175, 14.0], Some(2.0), None),
        ("gpt-5.2-codex", [1.75, 0.175, 14.0], Some(2.0), None),
        ("gpt-5.2-pro", [21.0, 21.0, 168.0], None, None),
        ("gpt-5.1", [1.25, 0.125, 10.0], Some(2.0), None),
        ("gpt-5.1-codex", [1.25, 0.125, 10.0], Some(2.0), None),
        ("gpt-5.1-codex-max", [1.25, 0.125, 10.0], Some(2.0), None),
        ("gpt-5.1-codex-mini", [0.25, 0.025, 2.0], None, None),
        ("gpt-5", [1.25, 0.125, 10.0], Some(2.0), None),
        ("gpt-5-2025-08-07", [1.25, 0.125, 10.0], Some(2.0), None),
        ("gpt-5-codex", [1.25, 0.125, 10.0], Some(2.0), None),
        ("gpt-5-pro", [15.0, 15.0, 120.0], None, None),
        ("gpt-5-pro-2025-10-06", [15.0, 15.0, 120.0], None, None),
        ("gpt-5.3-codex-spark", [1.75, 0.175, 14.0], None, None),
        ("gpt-5-mini", [0.25, 0.025, 2.0], Some(1.8), None),
        ("gpt-5-nano", [0.05, 0.005, 0.4], None, None),
        ("o3", [2.0, 0.5, 8.0], None, None),
        ("o4-mini", [1.1, 0.275, 4.4], None, None),
        ("text-embedding-3-small", [0.02, 0.02, 0.0], None, None),
        ("text-embedding-3-large", [0.13, 0.13, 0.0], None, None),
    ]
}

#[test]
fn every_built_in_openai_model_is_priced_as_its_sources_say() {
    let prices = PriceTable::new(crate::settings::default_pricing());
    for (model, [input, cached, output], priority, long) in openai_sources() {
        let (_, price) = prices
            .lookup(model)
            .unwrap_or_else(|| panic!("{model} has no built-in price"));
        // Cache writes cost what input costs: OpenAI bills no write surcharge.
        let actual = [
            price.input,
            price.cache_read,
            price.output,
            price.cache_write,
            price.cache_write_1h(),
        ];
        assert_eq!(actual, [input, cached, output, input, input], "{model}");
        assert_eq!(
            price.service_tier.get("priority").copied(),
            priority,
            "{model}"
        );
        assert_eq!(price.service_tier.get("flex"), Some(&0.5), "{model} flex");
        assert_eq!(price.batch, Some(0.5), "{model} batch");
        let long_rates = price.long_context.as_ref().map(|long| {
            assert_eq!(long.threshold, 272_000, "{model}");
            [long.input, long.cache_read, long.output]
        });
        assert_eq!(long_rates, long, "{model} long context");
    }
}

#[test]
fn openai_service_tier_of_the_answer_sets_the_rate() {
    let prices = PriceTable::new(crate::settings::default_pricing());
    let usage = |tier: Option<&str>| Usage {
        service_tier: tier.map(str::to_string),
        ..tokens(100_000, 100_000, 0, 100_000)
    };
    let cost = |tier| prices.cost_usd(Some("gpt-5.5"), &usage(tier)).unwrap();
    // 100K each of input, output and cached input, under the 272K long-context threshold.
    assert_usd(cost(None), (5.0 + 30.0 + 0.5) / 10.0);
    assert_usd(cost(Some("default")), (5.0 + 30.0 + 0.5) / 10.0);
    assert_usd(cost(Some("flex")), (2.5 + 15.0 + 0.25) / 10.0);
    assert_usd(cost(Some("priority")), (12.5 + 75.0 + 1.25) / 10.0);
    // Over 272K input tokens, the whole request at the long-context rates.
    let long = tokens(200_000, 1_000, 0, 100_000);
    let expected = (200_000.0 * 10.0 + 1_000.0 * 45.0 + 100_000.0 * 1.0) / 1e6;
    assert_usd(prices.cost_usd(Some("gpt-5.5"), &long).unwrap(), expected);
}

/// Gemini model ids with their prices as settings/sluice.toml's sources list them. Google bills
/// no per-token cache write: both cache-write rates are the input price, never charged.
fn gemini_sources() -> Vec<Expected> {
    let gemini = |model, input: f64, output, cache_read| {
        row(model, [input, output, input, input, cache_read])
    };
    let pro_3_long = Some((200_000, 4.0, 18.0, 4.0, 4.0, 0.4));
    vec![
        Expected {
            long_context: pro_3_long,
            ..gemini("gemini-3.1-pro-preview", 2.0, 12.0, 0.2)
        },
        Expected {
            long_context: pro_3_long,
            ..gemini("gemini-3.1-pro-preview-customtools", 2.0, 12.0, 0.2)
        },
        Expected {
            long_context: pro_3_long,
            ..gemini("gemini-3-pro-preview", 2.0, 12.0, 0.2)
        },
        gemini("gemini-3.8-flash", 0.75, 3.75, 0.075),
        gemini("gemini-3.5-flash", 1.5, 9.0, 0.15),
        gemini("gemini-3.5-flash-lite", 0.3, 2.5, 0.03),
        gemini("gemini-3-flash-preview", 0.5, 3.0, 0.05),
        gemini("gemini-3-flash", 0.5, 3.0, 0.05),
        gemini("gemini-3.1-flash-lite", 0.25, 1.5, 0.025),
        gemini("gemini-3.1-flash-lite-preview", 0.25, 1.5, 0.025),
        Expected {
            long_context: Some((200_000, 2.5, 15.0, 2.5, 2.5, 0.25)),
            ..gemini("gemini-2.5-pro", 1.25, 10.0, 0.125)
        },
        gemini("gemini-2.5-flash", 0.3, 2.5, 0.03),
        gemini("gemini-2.5-flash-lite", 0.1, 0.4, 0.01),
        gemini("gemini-2.5-flash-lite-preview-09-2025", 0.1, 0.4, 0.01),
        row("gemini-embedding-001", [0.15, 0.0, 0.15, 0.15, 0.15]),
    ]
}

#[test]
fn every_built_in_gemini_model_is_priced_as_its_sources_say() {
    let prices = PriceTable::new(crate::settings::default_pricing());
    for expected in gemini_sources() {
        let (model, price) = (expected.model, assert_rates(&prices, &expected));
        assert_eq!(price.batch, Some(0.5), "{model} batch");
    }
    // The sources disagree on it: it stays visible as unpriced rather than guessed.
    assert!(prices.lookup("gemini-3.7-flash").is_none());
}

#[test]
fn gemini_answers_cost_what_google_charges_worked_by_hand() {
    let prices = PriceTable::new(crate::settings::default_pricing());
    let cost = |model, usage: &Usage, batch| {
        prices
            .cost_usd_billed(Some(model), usage, batch)
            .unwrap_or_else(|| panic!("{model} unpriced"))
    };
    // As protocol::gemini reads answers: input excludes cached tokens; output has thoughts.
    let usage = |input, cache_read, output| tokens(input, output, 0, cache_read);
    // generate-content.json: 1173 in, 59 + 112 thinking out, 2.5 Flash:
    // 1173 × 0.30 + 171 × 2.50 = 351.9 + 427.5 = 779.4 per million.
    assert_usd(
        cost("gemini-2.5-flash", &usage(1173, 0, 171), false),
        779.4e-6,
    );
    // stream-generate-content.sse: 399 in, 11,883 cached, 145 out, 2.5 Pro:
    // 399 × 1.25 + 11,883 × 0.125 + 145 × 10 = 498.75 + 1,485.375 + 1,450 = 3,434.125.
    let pro = usage(399, 11_883, 145);
    assert_usd(cost("gemini-2.5-pro", &pro, false), 3434.125e-6);
    // The same at the batch rate: half.
    assert_usd(cost("gemini-2.5-pro", &pro, true), 1717.0625e-6);
    // A 3.1 Pro prompt of exactly 200,000 tokens (150,000 fresh + 50,000 cached) stays at the
    // standard rates: 150,000 × 2 + 50,000 × 0.2 + 1,000 × 12 = 322,000 per million.
    let at_threshold = usage(150_000, 50_000, 1_000);
    assert_usd(cost("gemini-3.1-pro-preview", &at_threshold, false), 0.322);
    // One token more and every token is charged at the long-context rates:
    // 150,001 × 4 + 50,000 × 0.4 + 1,000 × 18 = 638,004 per million.
    let over = usage(150_001, 50_000, 1_000);
    assert_usd(cost("gemini-3.1-pro-preview", &over, false), 0.638004);
    // Flash models have one rate whatever the prompt: 300,000 × 0.5 + 2,000 × 3 on 3 Flash.
    let long_flash = usage(300_000, 0, 2_000);
    assert_usd(cost("gemini-3-flash-preview", &long_flash, false), 0.156);
    // An embedding: 8 input tokens at $0.15 per million.
    assert_usd(cost("gemini-embedding-001", &usage(8, 0, 0), false), 1.2e-6);
    // Gemini CLI's default model, 3.8 Flash: 9,000 uncached + 1,000 cached in, 400 out (thoughts
    // included): 9,000 × 0.75 + 1,000 × 0.075 + 400 × 3.75 = 6,750 + 75 + 1,500 = 8,325 per
    // million; batch halves it. Its routing call on 3.5 Flash-Lite: 2,000 × 0.30 + 20 × 2.50 = 650.
    assert_usd(
        cost("gemini-3.8-flash", &usage(9000, 1000, 400), false),
        8325e-6,
    );
    assert_usd(
        cost("gemini-3.8-flash", &usage(9000, 1000, 400), true),
        4162.5e-6,
    );
    assert_usd(
        cost("gemini-3.5-flash-lite", &usage(2000, 0, 20), false),
        650e-6,
    );
}

#[test]
fn every_built_in_price_key_is_one_the_sources_list() {
    let built_in = crate::settings::default_pricing();
    let openai = openai_sources();
    let gemini = gemini_sources();
    let listed: Vec<&str> = (sources().iter().map(|row| row.model))
        .chain(openai.iter().map(|row| row.0))
        .chain(gemini.iter().map(|row| row.model))
        .collect();
    for key in built_in.keys() {
        assert!(
            listed.iter().any(|model| model.starts_with(key.as_str())),
            "{key} prices no model of the sources"
        );
    }
}

#[test]
fn fixture_sized_answer_costs_cents() {
    // stream-text.sse's usage at Haiku 4.5 prices.
    let haiku = price(1.0, 5.0, 1.25, 0.10);
    let usage = Usage {
        cache_creation_5m_input_tokens: Some(120),
        cache_creation_1h_input_tokens: Some(0),
        ..tokens(849, 47, 120, 3000)
    };
    let expected = (849.0 * 1.0 + 47.0 * 5.0 + 120.0 * 1.25 + 3000.0 * 0.10) / 1e6;
    assert_usd(haiku.cost_usd(&usage), expected);
}

/// Reads a fixture the way the proxy does and prices it with the built-in table.
fn fixture_cost(name: &str) -> f64 {
    use crate::protocol::UsageParser;
    use crate::usage::AnswerFormat;
    let path = format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let format = if name.ends_with(".sse") {
        AnswerFormat::EventStream
    } else {
        AnswerFormat::Json
    };
    let mut parser = UsageParser::new(format);
    parser.feed(&body);
    let answer = parser.finish();
    PriceTable::new(crate::settings::default_pricing())
        .cost_usd(answer.model.as_deref(), &answer.usage)
        .unwrap_or_else(|| panic!("{name}: {:?} has no built-in price", answer.model))
}

#[test]
fn every_fixture_costs_what_the_arithmetic_says() {
    // Prices in USD per million tokens, so each sum below is in µ$.
    let cases = [
        // Haiku 4.5: 849 × 1 + 47 × 5 + 120 (5-minute writes) × 1.25 + 3,000 × 0.1
        ("stream-text.sse", (849.0 + 235.0 + 150.0 + 300.0) / 1e6),
        // Sonnet 4.5: 2,210 × 3 + 18,000 × 0.3 + 95 × 15
        ("stream-tool-use.sse", (6630.0 + 5400.0 + 1425.0) / 1e6),
        // Opus 4.5, cut by an error event: 500 × 5 + 1 × 25
        ("stream-error-midway.sse", (2500.0 + 25.0) / 1e6),
        // Sonnet 4.5: 12 × 3 + 10 × 15
        ("message.json", (36.0 + 150.0) / 1e6),
        // Sonnet 4.5, thinking billed as output: 1,520 × 3 + 612 × 15
        ("stream-thinking.sse", (4560.0 + 9180.0) / 1e6),
        // Opus 4.1: 310 × 15 + 4,096 × 1.5 + 245 × 75
        (
            "stream-redacted-thinking.sse",
            (4650.0 + 6144.0 + 18375.0) / 1e6,
        ),
        // Sonnet 4.6: 10,682 × 3 + 510 × 15, plus 2 searches at $10 per 1,000
        ("stream-web-search.sse", (32046.0 + 7650.0) / 1e6 + 0.02),
        // Opus 4.6, US-only (1.1×): 24 × 5 + 4,000 × 6.25 + 10,000 × 10 + 380 × 25
        (
            "stream-cache-split.sse",
            (120.0 + 25000.0 + 100000.0 + 9500.0) / 1e6 * 1.1,
        ),
        // Haiku 5.5: the compaction read 180,000 (over 100K: 0.5 / 2.5), the answer 23,000
        // (0.1 / 0.5): 180,000 × 0.5 + 3,500 × 2.5 + 23,000 × 0.1 + 1,000 × 0.5
        (
            "message-compaction.json",
            (90000.0 + 8750.0 + 2300.0 + 500.0) / 1e6,
        ),
        // Opus 4.6, fast (6×) and US-only (1.1×): (1,200 × 5 + 300 × 25 + 8,000 × 0.5) × 6.6
        (
            "message-fast-us.json",
            (6000.0 + 7500.0 + 4000.0) / 1e6 * 6.0 * 1.1,
        ),
        // Sonnet 4.5 over 200K: 250,000 × 6 + 2,000 × 22.5
        ("message-long-context.json", (1_500_000.0 + 45_000.0) / 1e6),
    ];
    for (name, expected) in cases {
        let cost = fixture_cost(name);
        assert!(
            (cost - expected).abs() < 1e-9,
            "{name}: expected {expected} USD, got {cost}"
        );
    }
}
