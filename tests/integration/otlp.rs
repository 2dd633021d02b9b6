//! Issue "OpenTelemetry export": what sluice pushes to a collector equals what `/stats` counts,
//! spans follow the client's trace, and a collector that refuses, hangs or fails costs the
//! requests nothing.

use std::time::{Duration, Instant};

use crate::support::otlp::*;
use crate::support::*;

const SESSION: &str = "de638c79-7959-40b6-be6e-3b4a31afd82c";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const OTEL_KEY: &str = "otel-backend-secret-4b1d";

fn mock() -> MockUpstream {
    let mock = MockUpstream::start();
    mock.reply(|req| match req.header("x-mock").as_deref() {
        Some("stream") => Reply::sse(&fixture("stream-text.sse")),
        Some("429") => Reply::json(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        ),
        _ => Reply::json(200, &fixture("message.json")),
    });
    mock
}

fn with_otlp(mock: &MockUpstream, endpoint: &str, traces: bool) -> Sluice {
    sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml(&format!(
            "[otlp]\nendpoint = \"{endpoint}\"\nheaders_file = \"otlp-headers\"\n\
             interval_s = 1\ntraces = {traces}\n"
        ))
        .file("otlp-headers", &format!("x-otel-key: {OTEL_KEY}\n"))
        .server_key(SERVER_KEY)
        .start()
}

async fn post(sluice: &Sluice, mock: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("x-mock", mock));
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = request
        .send_body(r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}"#)
        .await
        .unwrap();
    let _ = response.body().limit(1 << 20).await;
    response.status().as_u16()
}

/// Polls until `ready` holds (or panics after `timeout`).
async fn until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn exported_metrics_and_spans_equal_stats() {
    let mock = mock();
    let receiver = OtlpReceiver::start(Answer::Accept);
    let sluice = with_otlp(&mock, &receiver.url(), true);
    let traced = [
        ("traceparent", TRACEPARENT),
        ("x-claude-code-session-id", SESSION),
        ("user-agent", "claude-cli/2.1.22 (external, cli)"),
    ];
    assert_eq!(post(&sluice, "json", &traced).await, 200);
    assert_eq!(post(&sluice, "json", &traced).await, 200);
    assert_eq!(post(&sluice, "stream", &[]).await, 200);
    assert_eq!(post(&sluice, "429", &[]).await, 429);
    let stats = stats_after(&sluice, 4, None).await;
    let totals = &stats["totals"];
    assert_eq!(totals["requests"], 4);

    let requests_of =
        |r: &opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest| {
            metric(r, "sluice.requests").map_or(0.0, sum_total)
        };
    until("4 requests exported", Duration::from_secs(15), || {
        receiver
            .latest_metrics()
            .is_some_and(|r| requests_of(&r) == 4.0)
    })
    .await;
    let exported = receiver.latest_metrics().unwrap();

    // The resource names sluice.
    let resource = exported.resource_metrics[0].resource.as_ref().unwrap();
    assert_eq!(
        attribute(&resource.attributes, "service.name").as_deref(),
        Some("sluice")
    );
    assert!(attribute(&resource.attributes, "service.version").is_some());
    assert!(attribute(&resource.attributes, "service.instance.id").is_some());

    // Names, units, and tokens by type equal to /stats.
    let tokens = metric(&exported, "gen_ai.client.token.usage").unwrap();
    assert_eq!(tokens.unit, "{token}");
    for (token_type, field) in [
        ("input", "input_tokens"),
        ("output", "output_tokens"),
        ("cache_read", "cache_read_input_tokens"),
        ("cache_creation", "cache_creation_input_tokens"),
    ] {
        let (_, sum) = histogram_total(tokens, "gen_ai.token.type", token_type);
        assert_eq!(sum, totals[field].as_f64().unwrap(), "{token_type}");
    }
    let duration = metric(&exported, "gen_ai.client.operation.duration").unwrap();
    assert_eq!(duration.unit, "s");
    let (count, seconds) = histogram_total(duration, "", "");
    assert_eq!(count, 4);
    assert!(seconds > 0.0);
    let cost = metric(&exported, "sluice.cost").unwrap();
    assert_eq!(cost.unit, "USD");
    let stats_cost = totals["cost_usd"].as_f64().unwrap();
    assert!(stats_cost > 0.0);
    assert!(
        (sum_total(cost) - stats_cost).abs() < 1e-9,
        "{} vs {stats_cost}",
        sum_total(cost)
    );

    // Attributes: provider by the route's protocol, operation by the path, error.type on the 429.
    let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(requests)) =
        &metric(&exported, "sluice.requests").unwrap().data
    else {
        panic!("requests is a sum");
    };
    for point in &requests.data_points {
        let attrs = &point.attributes;
        assert_eq!(
            attribute(attrs, "gen_ai.provider.name").as_deref(),
            Some("anthropic")
        );
        assert_eq!(
            attribute(attrs, "gen_ai.operation.name").as_deref(),
            Some("chat")
        );
        assert_eq!(
            attribute(attrs, "sluice.route").as_deref(),
            Some("/anthropic")
        );
        assert_eq!(
            attribute(attrs, "sluice.source").as_deref(),
            Some("server_key")
        );
        assert_eq!(
            attribute(attrs, "gen_ai.request.model").as_deref(),
            Some("claude-sonnet-4-5")
        );
        // No session or request ids on metrics: bounded.
        assert!(attribute(attrs, "gen_ai.conversation.id").is_none());
    }
    let clients: Vec<_> = requests
        .data_points
        .iter()
        .filter_map(|p| attribute(&p.attributes, "sluice.client"))
        .collect();
    assert_eq!(clients, vec!["claude-code".to_string()]);
    let errors: Vec<_> = requests
        .data_points
        .iter()
        .filter_map(|p| attribute(&p.attributes, "error.type"))
        .collect();
    assert_eq!(errors, vec!["429".to_string()]);

    // One span per request; the client's traceparent makes two of them its children.
    until("4 spans", Duration::from_secs(15), || {
        receiver.spans().len() == 4
    })
    .await;
    let spans = receiver.spans();
    let children: Vec<_> = spans
        .iter()
        .filter(|s| hex::encode(&s.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736")
        .collect();
    assert_eq!(children.len(), 2);
    for span in &children {
        assert_eq!(hex::encode(&span.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(span.name, "chat claude-sonnet-4-5-20250929");
        assert_eq!(
            attribute(&span.attributes, "gen_ai.conversation.id").as_deref(),
            Some(SESSION)
        );
        assert_eq!(
            attribute(&span.attributes, "gen_ai.usage.input_tokens").as_deref(),
            Some("12")
        );
        assert_eq!(
            attribute(&span.attributes, "gen_ai.usage.output_tokens").as_deref(),
            Some("10")
        );
        assert_eq!(
            attribute(&span.attributes, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(
            attribute(&span.attributes, "sluice.client").as_deref(),
            Some("claude-code")
        );
    }
    // The streamed answer: the whole prompt, cached parts included, is the input.
    let streamed = spans
        .iter()
        .find(|s| s.name == "chat claude-haiku-4-5-20251001")
        .expect("the streamed request's span");
    let attrs = &streamed.attributes;
    assert_eq!(
        attribute(attrs, "gen_ai.usage.input_tokens").as_deref(),
        Some("3969")
    );
    assert_eq!(
        attribute(attrs, "gen_ai.usage.cache_read.input_tokens").as_deref(),
        Some("3000")
    );
    assert_eq!(
        attribute(attrs, "gen_ai.usage.cache_creation.input_tokens").as_deref(),
        Some("120")
    );
    assert!(streamed.parent_span_id.is_empty());
    let span_cost: f64 = spans
        .iter()
        .map(|s| {
            attribute(&s.attributes, "sluice.cost")
                .unwrap()
                .parse::<f64>()
                .unwrap()
        })
        .sum();
    assert!((span_cost - stats_cost).abs() < 1e-9);
    let refused = spans
        .iter()
        .find(|s| s.status.is_some())
        .expect("the 429's span");
    assert_eq!(
        attribute(&refused.attributes, "error.type").as_deref(),
        Some("429")
    );

    // Every export carried the file's header and the protobuf content type.
    for headers in receiver.headers() {
        assert!(
            headers.contains(&("x-otel-key".into(), OTEL_KEY.into())),
            "{headers:?}"
        );
        assert!(headers.contains(&("content-type".into(), "application/x-protobuf".into())));
    }
    let stats = stats_after(&sluice, 4, None).await;
    assert!(
        stats["otlp"]["exported"].as_u64().unwrap() >= 2,
        "{}",
        stats["otlp"]
    );
    assert_eq!(stats["otlp"]["dropped"], 0);
    assert!(
        !sluice.logs().contains(OTEL_KEY),
        "the header's value was logged"
    );
}

/// Each fault: every request is answered, failures and drops are counted, the span queue stays
/// within its bound, and the outage is logged once.
#[actix_rt::test]
async fn a_collector_that_refuses_hangs_or_fails_costs_requests_nothing() {
    let mock = mock();
    let hanging = OtlpReceiver::start(Answer::Hang);
    let failing = OtlpReceiver::start(Answer::Status(500, None));
    let throttling = OtlpReceiver::start(Answer::Status(429, Some(1)));
    let cases = [
        ("refused", OtlpReceiver::refusing()),
        ("hanging", hanging.url()),
        ("500", failing.url()),
        ("429", throttling.url()),
    ];
    for (fault, endpoint) in cases {
        let sluice = with_otlp(&mock, &endpoint, true);
        for _ in 0..40 {
            assert_eq!(post(&sluice, "json", &[]).await, 200, "{fault}");
        }
        let stats = stats_after(&sluice, 40, None).await;
        assert_eq!(stats["totals"]["requests"], 40, "{fault}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let otlp = loop {
            let otlp = stats_after(&sluice, 40, None).await["otlp"].clone();
            let done = otlp["failed"].as_u64() >= Some(1)
                && (fault != "500" || otlp["dropped"].as_u64() >= Some(1));
            if done || Instant::now() > deadline {
                break otlp;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(otlp["failed"].as_u64() >= Some(1), "{fault}: {otlp}");
        assert_eq!(otlp["exported"], 0, "{fault}: {otlp}");
        assert_eq!(otlp["failing"], true, "{fault}: {otlp}");
        assert!(
            otlp["queued_spans"].as_u64().unwrap() <= sluice::otlp::SPAN_QUEUE_CAPACITY as u64,
            "{fault}: {otlp}"
        );
        let error = otlp["last_error"].as_str().unwrap().to_string();
        match fault {
            "refused" => assert!(error.contains("cannot reach"), "{error}"),
            "hanging" => assert!(error.contains("no answer within"), "{error}"),
            "500" => {
                assert!(error.contains("HTTP 500"), "{error}");
                // Refused for good: dropped without retries.
                assert!(otlp["dropped"].as_u64() >= Some(1), "{otlp}");
            }
            _ => assert!(error.contains("HTTP 429"), "{error}"),
        }
        assert!(!error.contains(OTEL_KEY));
        let logs = sluice.logs();
        assert_eq!(
            logs.matches("OpenTelemetry export failing").count(),
            1,
            "{fault}: one line per outage:\n{logs}"
        );
        let metrics = client()
            .get(sluice.url("/metrics"))
            .send()
            .await
            .unwrap()
            .body()
            .await
            .unwrap();
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        assert!(metrics.contains("sluice_otlp_failed_total"), "{metrics}");
        assert!(metrics.contains("sluice_otlp_dropped_total"), "{metrics}");
    }
}

#[actix_rt::test]
async fn an_outage_is_logged_once_and_its_recovery_once() {
    let mock = mock();
    let receiver = OtlpReceiver::scripted(
        vec![Answer::Status(503, Some(1)), Answer::Status(503, Some(1))],
        Answer::Accept,
    );
    let sluice = with_otlp(&mock, &receiver.url(), false);
    assert_eq!(post(&sluice, "json", &[]).await, 200);
    sluice.wait_for_log("OpenTelemetry export recovered", Duration::from_secs(20));
    let logs = sluice.logs();
    assert_eq!(
        logs.matches("OpenTelemetry export failing").count(),
        1,
        "{logs}"
    );
    until("the request exported", Duration::from_secs(10), || {
        receiver
            .latest_metrics()
            .is_some_and(|r| metric(&r, "sluice.requests").map_or(0.0, sum_total) == 1.0)
    })
    .await;
    let otlp = stats_after(&sluice, 1, None).await["otlp"].clone();
    assert_eq!(otlp["failed"], 2, "{otlp}");
    assert_eq!(otlp["failing"], false, "{otlp}");
}

#[actix_rt::test]
async fn headers_file_changes_apply_without_restart_and_bad_ones_are_refused() {
    let mock = mock();
    let receiver = OtlpReceiver::start(Answer::Accept);
    let sluice = with_otlp(&mock, &receiver.url(), false);
    until("a first export", Duration::from_secs(10), || {
        receiver.hits() > 0
    })
    .await;
    write_secret(
        &sluice.dir.path().join("otlp-headers"),
        "x-otel-key: rotated-key\n",
    );
    sluice.wait_for_log(
        "OpenTelemetry export headers changed",
        Duration::from_secs(10),
    );
    until(
        "an export with the new key",
        Duration::from_secs(10),
        || {
            receiver
                .headers()
                .last()
                .is_some_and(|h| h.contains(&("x-otel-key".into(), "rotated-key".into())))
        },
    )
    .await;
    // A broken file is refused by key and line; the running headers stay.
    write_secret(&sluice.dir.path().join("otlp-headers"), "no colon here\n");
    sluice.wait_for_log("otlp.headers_file", Duration::from_secs(10));
    assert!(!sluice.logs().contains("no colon here"));
}

#[test]
fn check_validates_otlp_and_names_the_key() {
    let route = "[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n";
    let (code, out) = check(
        &format!("{route}[otlp]\nendpoint = \"http://127.0.0.1:4318\"\ntraces = true\n"),
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("otlp -> http://127.0.0.1:4318/ [metrics every 10 s, traces on]"),
        "{out}"
    );
    let (code, out) = check(&format!("{route}[otlp]\nendpont = \"http://x\"\n"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("endpont"), "{out}");
    let (code, out) = check(&format!("{route}[otlp]\nheaders_file = \"missing\"\n"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("otlp.headers_file"), "{out}");
}
