use super::*;
use crate::protocol::anthropic::{is_batch_results_request, BATCH_RESULTS};
use crate::protocol::fixture_reads;
use crate::protocol::gemini::{BATCH_INLINED_RESPONSES, BATCH_RESPONSES_FILE};
use crate::protocol::openai::BATCH_OUTPUT;
use crate::protocol::Protocol;

fn fixture(name: &str) -> Vec<u8> {
    fixture_reads::fixture("anthropic", name)
}

fn built_in_prices() -> PriceTable {
    PriceTable::new(crate::settings::default_pricing())
}

fn read_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> BatchResults {
    read_as(&BATCH_RESULTS, chunks)
}

/// Feeds the chunks to a reader of `reading`, checking its memory bound after each.
fn read_as<'a>(
    reading: &'static BatchReading,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> BatchResults {
    let mut reader = BatchResultsReader::new(built_in_prices(), reading);
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

/// The body read whole, split in two at every offset, and in 1-byte chunks gives `expected`.
fn assert_read_alike_however_cut(
    reading: &'static BatchReading,
    body: &[u8],
    expected: &BatchResults,
) {
    fixture_reads::for_every_cut(body, |chunks, how| {
        assert_same(&read_as(reading, chunks.iter().copied()), expected, how);
    });
}

#[test]
fn fixture_split_anywhere_or_in_single_bytes_reads_the_same() {
    let body = fixture("batch-results.jsonl");
    assert_read_alike_however_cut(&BATCH_RESULTS, &body, &expected_fixture_results());
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
    let mut reader = BatchResultsReader::new(built_in_prices(), &BATCH_RESULTS);
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

/// gemini/batch-responses.jsonl, by hand, each line at half its standard price:
/// - gemini-2.5-flash, 9 in / 412 + 1,088 thoughts out: 9 × 0.30 + 1,500 × 2.50 = 3,752.7 µ$
/// - gemini-2.5-flash, 11 in / 287 out: 11 × 0.30 + 287 × 2.50 = 720.8 µ$
/// - an `error` line: nothing
/// - gemini-2.5-pro, 12,000 prompt of which 8,000 cached / 500 + 700 thoughts out (under 200K):
///   4,000 × 1.25 + 8,000 × 0.125 + 1,200 × 10 = 18,000 µ$
///
/// Sum 22,473.5 µ$, half: 0.01123675 USD.
#[test]
fn gemini_responses_file_lines_are_priced_one_by_one_at_the_batch_rate() {
    let expected = BatchResults {
        usage: Usage {
            input_tokens: 9 + 11 + 4_000,
            cache_read_input_tokens: 8_000,
            output_tokens: 1_500 + 287 + 1_200,
            reasoning_output_tokens: 1_088 + 700,
            ..Usage::default()
        },
        cost_usd: 0.01123675,
        model: Some("gemini-2.5-flash".into()),
        succeeded: 3,
        not_succeeded: 1,
        unpriced: 0,
        unreadable: 0,
    };
    let body = fixture_reads::fixture("gemini", "batch-responses.jsonl");
    assert_read_alike_however_cut(&BATCH_RESPONSES_FILE, &body, &expected);
}

/// gemini/batch-inlined-responses.json: the same two responses (and one error) in the
/// operation's `response` and mirrored in `metadata.output`, counted once. gemini-2.5-flash-lite
/// at half its price:
/// - 1,200 in / 300 out: 1,200 × 0.10 + 300 × 0.40 = 240 µ$
/// - 800 in / 100 + 400 thoughts out: 800 × 0.10 + 500 × 0.40 = 280 µ$
///
/// Sum 520 µ$, half: 0.00026 USD.
#[test]
fn gemini_inlined_responses_are_priced_one_by_one_and_counted_once() {
    let expected = BatchResults {
        usage: Usage {
            input_tokens: 1_200 + 800,
            output_tokens: 300 + 500,
            reasoning_output_tokens: 400,
            ..Usage::default()
        },
        cost_usd: 0.00026,
        model: Some("gemini-2.5-flash-lite".into()),
        succeeded: 2,
        not_succeeded: 1,
        unpriced: 0,
        unreadable: 0,
    };
    let body = fixture_reads::fixture("gemini", "batch-inlined-responses.json");
    assert_read_alike_however_cut(&BATCH_INLINED_RESPONSES, &body, &expected);
}

#[test]
fn gemini_inlined_responses_only_in_the_metadata_still_count() {
    let body = r#"{"name":"batches/1","metadata":{"output":{"inlinedResponses":{"inlinedResponses":[{"response":{"usageMetadata":{"promptTokenCount":1000000},"modelVersion":"gemini-2.5-flash-lite"}}]}}},"done":true}"#;
    let results = read_as(&BATCH_INLINED_RESPONSES, [body.as_bytes()]);
    assert_eq!(results.succeeded, 1);
    // 1M × 0.10 USD, half.
    assert_usd(results.cost_usd, 0.05);
}

#[test]
fn a_running_batch_or_another_document_counts_nothing() {
    let bodies = [
        r#"{"name":"batches/1","metadata":{"state":"BATCH_STATE_RUNNING"},"done":false}"#,
        r#"{"usageMetadata":{"promptTokenCount":5},"response":{"usageMetadata":{"promptTokenCount":5}}}"#,
        r#"{"response":{"inlinedResponses":[{"response":{"usageMetadata":{"promptTokenCount":5}}}]}}"#,
    ];
    for body in bodies {
        let results = read_as(&BATCH_INLINED_RESPONSES, [body.as_bytes()]);
        assert_eq!(results, BatchResults::default(), "{body}");
    }
}

#[test]
fn a_huge_inlined_response_is_read_within_the_memory_cap() {
    let text = "lorem \\\"usageMetadata\\\" {[ ".repeat(200_000);
    let entry = |tokens: u64| {
        format!(
            r#"{{"response":{{"candidates":[{{"content":{{"parts":[{{"text":"{text}"}}]}}}}],"usageMetadata":{{"promptTokenCount":{tokens}}},"modelVersion":"gemini-2.5-flash-lite"}}}}"#
        )
    };
    let body = format!(
        "{{\n  \"response\": {{\n    \"inlinedResponses\": {{\n      \"inlinedResponses\": [\n{},\n{}\n]}}}}}}",
        entry(600_000),
        entry(400_000)
    );
    assert!(body.len() > 10_000_000);
    let mut reader = BatchResultsReader::new(built_in_prices(), &BATCH_INLINED_RESPONSES);
    let mut most_held = 0;
    for chunk in body.as_bytes().chunks(16 * 1024 + 3) {
        reader.feed(chunk);
        most_held = most_held.max(reader.held_bytes());
    }
    let results = reader.finish();
    assert_eq!(results.succeeded, 2);
    // 1M × 0.10 USD, half.
    assert_usd(results.cost_usd, 0.05);
    assert!(most_held < 4 * 1024, "held {most_held} bytes");
}

/// openai/batch-output.jsonl, by hand, each line at half its standard price:
/// - Chat Completions, gpt-5-mini, 1,200 prompt of which 1,024 cached / 300 out (192
///   reasoning): 176 × 0.25 + 1,024 × 0.025 + 300 × 2 = 669.6 µ$
/// - Responses, gpt-5, 500 in / 1,000 out (640 reasoning): 500 × 1.25 + 1,000 × 10 = 10,625 µ$
/// - Embeddings, text-embedding-3-small, 13 in: 13 × 0.02 = 0.26 µ$
/// - a 400 answer and an `error` line (`response: null`): nothing
///
/// Sum 11,294.86 µ$, half: 0.00564743 USD.
#[test]
fn openai_output_lines_are_priced_one_by_one_at_the_batch_rate() {
    let expected = BatchResults {
        usage: Usage {
            input_tokens: 176 + 500 + 13,
            cache_read_input_tokens: 1_024,
            output_tokens: 300 + 1_000,
            reasoning_output_tokens: 192 + 640,
            ..Usage::default()
        },
        cost_usd: 0.00564743,
        model: Some("gpt-5-mini-2025-08-07".into()),
        succeeded: 3,
        not_succeeded: 2,
        unpriced: 0,
        unreadable: 0,
    };
    let body = fixture_reads::fixture("openai", "batch-output.jsonl");
    assert_read_alike_however_cut(&BATCH_OUTPUT, &body, &expected);
}

#[test]
fn a_file_that_is_not_batch_output_counts_nothing() {
    let files = [
        "{\"purpose\":\"fine-tune\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n",
        "{\"custom_id\":\"r1\",\"method\":\"POST\",\"url\":\"/v1/responses\",\"body\":{\"model\":\"gpt-5\",\"usage\":{\"input_tokens\":9}}}\n",
        "col_a,col_b\n1,2\n",
        "\u{89}PNG\r\n\u{1a}\n",
    ];
    for file in files {
        let results = read_as(&BATCH_OUTPUT, [file.as_bytes()]);
        assert_eq!(results.usage, Usage::default(), "{file}");
        assert_eq!((results.succeeded, results.cost_usd), (0, 0.0), "{file}");
    }
}

#[test]
fn a_line_over_the_value_cap_does_not_break_the_lines_after_it() {
    let pad = "x".repeat(MAX_VALUE_BYTES);
    let cases: [(&'static BatchReading, String, String); 3] = [
        (
            &BATCH_OUTPUT,
            format!(
                r#"{{"response":{{"status_code":200,"body":{{"model":"gpt-5","usage":{{"input_tokens":7,"pad":"{pad}"}}}}}}}}"#
            ),
            r#"{"response":{"status_code":200,"body":{"model":"gpt-5","usage":{"input_tokens":1000000}}}}"#.into(),
        ),
        (
            &BATCH_RESPONSES_FILE,
            format!(
                r#"{{"key":"a","response":{{"usageMetadata":{{"promptTokenCount":7,"pad":"{pad}"}},"modelVersion":"gemini-2.5-flash"}}}}"#
            ),
            r#"{"key":"b","response":{"usageMetadata":{"promptTokenCount":1000000},"modelVersion":"gemini-2.5-flash"}}"#.into(),
        ),
        (
            &BATCH_RESULTS,
            format!(
                r#"{{"result":{{"type":"succeeded","message":{{"model":"claude-haiku-4-5","usage":{{"input_tokens":7,"pad":"{pad}"}}}}}}}}"#
            ),
            r#"{"result":{"type":"succeeded","message":{"model":"claude-haiku-4-5","usage":{"input_tokens":1000000}}}}"#.into(),
        ),
    ];
    for (reading, long, next) in cases {
        let body = format!("{long}\n{{\"broken\":\n{next}\n");
        let results = read_as(reading, body.as_bytes().chunks(1000));
        assert_eq!(results.unreadable, 2, "{next}");
        assert_eq!(results.succeeded, 1, "{next}");
        assert_eq!(results.usage.input_tokens, 1_000_000, "{next}");
    }
}

#[test]
fn openai_batch_objects_are_recognised_by_their_path() {
    let yes = [
        "/openai/v1/batches",
        "/openai/v1/batches/",
        "/openai/v1/batches/batch_abc123",
        "/openai/v1/batches/batch_abc123/cancel",
    ];
    let no = [
        "/openai/v1/responses",
        "/openai/v1/batches//cancel",
        "/openai/v1/vector_stores/vs_1/file_batches/vsfb_1",
        "/openai/v1/files/file-xyz123/content",
    ];
    let api = Protocol::OpenAi.api();
    for path in yes {
        assert!(api.answer_sums_batch_usage(path), "{path}");
    }
    for path in no {
        assert!(!api.answer_sums_batch_usage(path), "{path}");
    }
    for protocol in [Protocol::Anthropic, Protocol::Gemini] {
        assert!(!protocol.api().answer_sums_batch_usage("/v1/batches/b1"));
    }
}

#[test]
fn each_protocol_recognises_its_batch_results_by_method_and_path() {
    let reading = |protocol: Protocol, method: &str, path: &str| {
        protocol
            .api()
            .batch_reading(method, path)
            .map(|reading| reading as *const BatchReading)
    };
    let cases: [(Protocol, &str, &str, Option<&'static BatchReading>); 14] = [
        (
            Protocol::Gemini,
            "GET",
            "/gemini/download/v1beta/files/abc123:download",
            Some(&BATCH_RESPONSES_FILE),
        ),
        (
            Protocol::Gemini,
            "GET",
            "/gemini/v1/files/batch-8b6ssu2x:download",
            Some(&BATCH_RESPONSES_FILE),
        ),
        (
            Protocol::Gemini,
            "GET",
            "/gemini/v1beta/batches/8b6ssu2x0d4z",
            Some(&BATCH_INLINED_RESPONSES),
        ),
        (Protocol::Gemini, "GET", "/gemini/v1beta/files/abc123", None),
        (
            Protocol::Gemini,
            "GET",
            "/gemini/v1beta/files/:download",
            None,
        ),
        (
            Protocol::Gemini,
            "POST",
            "/gemini/v1beta/batches/8b6ssu2x0d4z:cancel",
            None,
        ),
        (Protocol::Gemini, "GET", "/gemini/v1beta/batches", None),
        (
            Protocol::Gemini,
            "DELETE",
            "/gemini/v1beta/batches/8b6ssu2x0d4z",
            None,
        ),
        (
            Protocol::OpenAi,
            "GET",
            "/openai/v1/files/file-xyz123/content",
            Some(&BATCH_OUTPUT),
        ),
        (
            Protocol::OpenAi,
            "GET",
            "/v1/files/file-xyz123/content/",
            Some(&BATCH_OUTPUT),
        ),
        (
            Protocol::OpenAi,
            "GET",
            "/openai/v1/files/file-xyz123",
            None,
        ),
        (
            Protocol::OpenAi,
            "DELETE",
            "/openai/v1/files/file-xyz123/content",
            None,
        ),
        (
            Protocol::Anthropic,
            "GET",
            "/anthropic/v1/messages/batches/msgbatch_01/results",
            Some(&BATCH_RESULTS),
        ),
        (
            Protocol::None,
            "GET",
            "/anthropic/v1/messages/batches/msgbatch_01/results",
            None,
        ),
    ];
    for (protocol, method, path, expected) in cases {
        assert_eq!(
            reading(protocol, method, path),
            expected.map(|reading| reading as *const BatchReading),
            "{method} {path}"
        );
    }
}

proptest::proptest! {
    /// Whatever the bytes and their split, no reading panics or holds more than its bound.
    #[test]
    fn any_bytes_are_read_within_the_memory_bound(
        body in fixture_reads::tricky_bytes(vec![
            b"200", b"null",
            b"\"response\"", b"\"usageMetadata\"", b"\"inlinedResponses\"", b"\"output\"",
            b"\"metadata\"", b"\"status_code\"", b"\"body\"", b"\"usage\"", b"\"error\"",
            b"\"result\"", b"\"message\"", b"{\"promptTokenCount\":5}", b"{\"input_tokens\":5}",
        ]),
        cut in 0usize..400,
    ) {
        for reading in [&BATCH_RESULTS, &BATCH_RESPONSES_FILE, &BATCH_INLINED_RESPONSES, &BATCH_OUTPUT] {
            let cut = cut.min(body.len());
            let whole = read_as(reading, [&body[..]]);
            let split = read_as(reading, [&body[..cut], &body[cut..]]);
            proptest::prop_assert_eq!(whole, split);
        }
    }
}
