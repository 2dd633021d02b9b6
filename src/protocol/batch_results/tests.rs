use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/anthropic/");

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}{name}");
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

fn built_in_prices() -> PriceTable {
    PriceTable::new(crate::settings::default_pricing())
}

fn read_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> BatchResults {
    let mut reader = BatchResultsReader::new(built_in_prices());
    for chunk in chunks {
        reader.feed(chunk);
        assert!(reader.held_bytes() <= 4 * MAX_VALUE_BYTES);
    }
    reader.finish()
}

fn assert_usd(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected} USD, got {actual}"
    );
}

/// batch-results.jsonl, worked out by hand: four succeeded lines, each priced on its own at
/// half the standard price.
/// - Sonnet 4.5, 11 in / 36 out: 11 × 3 + 36 × 15 = 573 µ$
/// - Sonnet 4.5, 10 in / 34 out: 10 × 3 + 34 × 15 = 540 µ$
/// - Sonnet 4.5, 250,000 in / 2,000 out, over 200K: 250,000 × 6 + 2,000 × 22.5 = 1,545,000 µ$
/// - Haiku 4.5, 100 in / 20 out: 100 × 1 + 20 × 5 = 200 µ$
///
/// Sum 1,546,313 µ$, half: 0.7731565 USD. Summing the lines first would have put all of them
/// over 200K.
fn expected_fixture_results() -> BatchResults {
    BatchResults {
        usage: Usage {
            input_tokens: 11 + 10 + 250_000 + 100,
            output_tokens: 36 + 34 + 2_000 + 20,
            ..Usage::default()
        },
        cost_usd: 0.7731565,
        model: Some("claude-sonnet-4-5-20250929".into()),
        succeeded: 4,
        not_succeeded: 3,
        unpriced: 0,
        unreadable: 0,
    }
}

fn assert_same(actual: &BatchResults, expected: &BatchResults, context: &str) {
    assert_usd(actual.cost_usd, expected.cost_usd);
    let without_cost = |results: &BatchResults| BatchResults {
        cost_usd: 0.0,
        ..results.clone()
    };
    assert_eq!(without_cost(actual), without_cost(expected), "{context}");
}

#[test]
fn fixture_lines_are_summed_and_priced_one_by_one_at_the_batch_rate() {
    let body = fixture("batch-results.jsonl");
    assert_same(
        &read_chunks([&body[..]]),
        &expected_fixture_results(),
        "whole",
    );
}

#[test]
fn fixture_split_anywhere_or_in_single_bytes_reads_the_same() {
    let body = fixture("batch-results.jsonl");
    let expected = expected_fixture_results();
    for cut in 0..=body.len() {
        let results = read_chunks([&body[..cut], &body[cut..]]);
        assert_same(&results, &expected, &format!("cut at {cut}"));
    }
    assert_same(&read_chunks(body.chunks(1)), &expected, "1-byte chunks");
}

#[test]
fn crlf_line_ends_and_blank_lines_change_nothing() {
    let body = String::from_utf8(fixture("batch-results.jsonl")).unwrap();
    let crlf = body.replace('\n', "\r\n\r\n");
    assert_same(
        &read_chunks([crlf.as_bytes()]),
        &expected_fixture_results(),
        "crlf",
    );
}

#[test]
fn last_line_without_line_feed_still_counts() {
    let line = r#"{"custom_id":"a","result":{"type":"succeeded","message":{"model":"claude-haiku-4-5","usage":{"input_tokens":1000000}}}}"#;
    let results = read_chunks([line.as_bytes()]);
    assert_eq!(results.succeeded, 1);
    // 1M × 1 USD, half.
    assert_usd(results.cost_usd, 0.5);
}

#[test]
fn huge_result_line_is_read_within_the_memory_cap() {
    let text = "lorem \\\"usage\\\" {[ ".repeat(300_000);
    let line = format!(
        r#"{{"custom_id":"big","result":{{"type":"succeeded","message":{{"model":"claude-haiku-4-5","content":[{{"type":"text","text":"{text}"}}],"usage":{{"input_tokens":10,"output_tokens":64000}}}}}}}}"#
    );
    assert!(line.len() > 5_000_000);
    let mut reader = BatchResultsReader::new(built_in_prices());
    let mut most_held = 0;
    for chunk in line.as_bytes().chunks(16 * 1024 + 3) {
        reader.feed(chunk);
        most_held = most_held.max(reader.held_bytes());
    }
    let results = reader.finish();
    assert_eq!(results.usage.output_tokens, 64_000);
    // (10 × 1 + 64,000 × 5) / 1M, half.
    assert_usd(results.cost_usd, 0.160005);
    assert!(most_held < 4 * 1024, "held {most_held} bytes");
}

#[test]
fn wanted_values_are_read_only_at_their_path() {
    // `usage` and `type` elsewhere (in content, in custom_id's place, one level off) are not
    // the result's.
    let line = r#"{"usage":{"input_tokens":5},"type":"succeeded","result":{"message":{"content":[{"type":"tool_use","input":{"usage":{"input_tokens":7}}}],"model":"claude-haiku-4-5","usage":{"input_tokens":1000000}},"type":"succeeded"}}"#;
    let results = read_chunks([line.as_bytes(), b"\n"]);
    assert_eq!(results.succeeded, 1);
    assert_eq!(results.usage.input_tokens, 1_000_000);
}

#[test]
fn unreadable_lines_are_counted_and_skipped() {
    let deep = format!(
        r#"{{"result":{{"type":"succeeded","message":{{"model":"claude-haiku-4-5","content":{}1{},"usage":{{"input_tokens":3}}}}}}}}"#,
        "[".repeat(MAX_DEPTH),
        "]".repeat(MAX_DEPTH)
    );
    let long_usage = format!(
        r#"{{"result":{{"type":"succeeded","message":{{"model":"claude-haiku-4-5","usage":{{"input_tokens":3,"pad":"{}"}}}}}}}}"#,
        "x".repeat(MAX_VALUE_BYTES)
    );
    let lines = [
        "not json at all",
        r#"{"result":{"type":"succeeded","message":{"usage":{"input_tokens":3}}"#,
        r#"{"result":{"type":"succeeded"]}"#,
        &deep,
        &long_usage,
    ];
    for line in lines {
        let results = read_chunks([line.as_bytes(), b"\n"]);
        assert_eq!(results.unreadable, 1, "{line:.80}");
        assert_eq!(results.usage, Usage::default(), "{line:.80}");
        assert_eq!(results.cost_usd, 0.0);
    }
}

#[test]
fn succeeded_line_of_an_unpriced_model_counts_tokens_at_no_cost() {
    let line =
        r#"{"result":{"type":"succeeded","message":{"model":"gpt-x","usage":{"input_tokens":5}}}}"#;
    let results = read_chunks([line.as_bytes()]);
    assert_eq!(results.unpriced, 1);
    assert_eq!(results.usage.input_tokens, 5);
    assert_eq!(results.cost_usd, 0.0);
    assert_eq!(results.model.as_deref(), Some("gpt-x"));
}

#[test]
fn batch_results_requests_are_recognised_by_method_and_path() {
    let yes = [
        (
            "GET",
            "/anthropic/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d/results",
        ),
        ("get", "/v1/messages/batches/msgbatch_01/results/"),
    ];
    let no = [
        ("POST", "/anthropic/v1/messages/batches/msgbatch_01/results"),
        ("GET", "/anthropic/v1/messages/batches/msgbatch_01"),
        ("GET", "/anthropic/v1/messages/batches//results"),
        ("GET", "/anthropic/v1/messages/batches/results"),
        ("GET", "/anthropic/v1/other/batches/msgbatch_01/results"),
        ("GET", "/anthropic/v1/messages"),
    ];
    for (method, path) in yes {
        assert!(is_batch_results_request(method, path), "{method} {path}");
    }
    for (method, path) in no {
        assert!(!is_batch_results_request(method, path), "{method} {path}");
    }
}
