//! The Responses API over a WebSocket, end to end: sluice between an awc WebSocket client and a
//! WebSocket upstream. Each response on a socket is one record; a prewarm is none; refusals get
//! the Responses error event; the socket holds a `max_concurrent` slot; nothing leaks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::AggregatedMessage;
use awc::ws::{self, Frame};
use futures_util::{SinkExt, StreamExt};

use crate::support::*;

/// What the WebSocket upstream saw.
#[derive(Default)]
struct Seen {
    /// Each upgrade's headers (lowercase names).
    handshakes: Vec<Vec<(String, String)>>,
    /// Each upgrade's path.
    paths: Vec<String>,
    /// Every text message, as received.
    frames: Vec<String>,
    /// Sockets that ended (close frame or connection gone).
    ended: usize,
}

struct WsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl WsUpstream {
    /// A Responses WebSocket server: each `response.create` is answered with `response.created`,
    /// a text delta and `response.completed` (a prewarm with no output). An input naming `HANG`
    /// gets only `response.created`; one naming `CLOSE` gets `response.created`, then a close.
    fn start() -> WsUpstream {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(shared.clone()))
                        .default_service(web::to(answer_socket))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .unwrap();
                tx.send(server.addrs()[0]).unwrap();
                server.run().await.unwrap();
            });
        });
        WsUpstream {
            addr: rx.recv().unwrap(),
            seen,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The base of the ChatGPT backend's Codex API on this server.
    fn chatgpt_url(&self) -> String {
        format!("http://{}/backend-api/codex", self.addr)
    }

    fn handshakes(&self) -> usize {
        self.seen.lock().unwrap().handshakes.len()
    }

    fn frames(&self) -> Vec<String> {
        self.seen.lock().unwrap().frames.clone()
    }

    fn handshake(&self, n: usize) -> Vec<(String, String)> {
        self.seen.lock().unwrap().handshakes[n].clone()
    }
}

async fn answer_socket(
    req: HttpRequest,
    body: web::Payload,
    seen: web::Data<Arc<Mutex<Seen>>>,
) -> actix_web::Result<HttpResponse> {
    {
        let mut seen = seen.lock().unwrap();
        seen.handshakes.push(
            req.headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
        );
        seen.paths.push(req.path().to_string());
    }
    let (mut response, mut session, stream) = actix_ws::handle(&req, body)?;
    for (name, value) in [
        ("x-codex-primary-used-percent", "42"),
        ("x-codex-primary-window-minutes", "300"),
        ("x-codex-secondary-used-percent", "7.5"),
        ("x-codex-secondary-window-minutes", "10080"),
    ] {
        response.headers_mut().insert(
            name.parse().unwrap(),
            actix_web::http::header::HeaderValue::from_static(value),
        );
    }
    let seen = seen.get_ref().clone();
    actix_web::rt::spawn(async move {
        let mut stream = stream
            .max_frame_size(1 << 20)
            .aggregate_continuations()
            .max_continuation_size(1 << 20);
        let mut n = 0;
        while let Some(Ok(message)) = stream.recv().await {
            let AggregatedMessage::Text(text) = message else {
                if matches!(message, AggregatedMessage::Close(_)) {
                    break;
                }
                continue;
            };
            seen.lock().unwrap().frames.push(text.to_string());
            let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if frame["type"] != "response.create" {
                continue;
            }
            n += 1;
            let id = format!("resp_{n}");
            let model = frame["model"].as_str().unwrap_or("gpt-test").to_string();
            let created = serde_json::json!({"type": "response.created",
                "response": {"id": id, "model": model, "status": "in_progress"}});
            if session.text(created.to_string()).await.is_err() {
                break;
            }
            if text.contains("HANG") {
                continue;
            }
            if text.contains("CLOSE") {
                let _ = session.close(None).await;
                break;
            }
            let mut events = vec![];
            if frame["generate"] != false {
                events.push(serde_json::json!({"type": "response.output_text.delta",
                    "delta": "pong"}));
            }
            events.push(
                serde_json::json!({"type": "response.completed", "response": {
                "id": id, "model": model, "status": "completed",
                "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40},
                    "output_tokens": 10, "output_tokens_details": {"reasoning_tokens": 4}}}}),
            );
            for event in events {
                if session.text(event.to_string()).await.is_err() {
                    break;
                }
            }
        }
        seen.lock().unwrap().ended += 1;
    });
    Ok(response)
}

type Socket = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

async fn connect(sluice: &Sluice, headers: &[(&str, &str)]) -> Result<Socket, u16> {
    let mut request = client()
        .ws(sluice.url("/openai/v1/responses"))
        .max_frame_size(1 << 20);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    match request.connect().await {
        Ok((_, socket)) => Ok(socket),
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => Err(status.as_u16()),
        Err(err) => panic!("upgrade failed: {err}"),
    }
}

fn create(model: &str, input: &str) -> String {
    serde_json::json!({"type": "response.create", "model": model, "input": input}).to_string()
}

fn prewarm(model: &str) -> String {
    serde_json::json!({"type": "response.create", "model": model, "generate": false}).to_string()
}

/// The text events of one response, up to and including the one that ends it.
async fn response_events(socket: &mut Socket) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event within 10 s")
            .expect("the socket is open")
            .expect("a valid frame");
        let Frame::Text(text) = frame else {
            panic!("expected a text event, got {frame:?}");
        };
        let event: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let ends = matches!(
            event["type"].as_str(),
            Some("response.completed" | "error" | "response.failed")
        );
        events.push(event);
        if ends {
            return events;
        }
    }
}

async fn next_frame(socket: &mut Socket) -> Frame {
    tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a frame within 10 s")
        .expect("the socket is open")
        .expect("a valid frame")
}

fn start_sluice(upstream: &WsUpstream, extra: &str) -> Sluice {
    sluice()
        .route("/openai/v1", &upstream.url(), &["protocol = \"openai\""])
        .toml(extra)
        .start()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn each_response_on_a_socket_is_a_record_and_a_prewarm_is_none() {
    let upstream = WsUpstream::start();
    let sluice = start_sluice(&upstream, "");
    let mut socket = connect(&sluice, &[("session-id", "codex-session-1")])
        .await
        .unwrap();
    let mut sent = vec![prewarm("gpt-5.5")];
    socket
        .send(ws::Message::Text(sent[0].clone().into()))
        .await
        .unwrap();
    let events = response_events(&mut socket).await;
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    for n in 0..3 {
        let frame = create("gpt-5.5", &format!("turn {n}"));
        sent.push(frame.clone());
        socket.send(ws::Message::Text(frame.into())).await.unwrap();
        let events = response_events(&mut socket).await;
        assert_eq!(
            events
                .iter()
                .map(|e| e["type"].as_str().unwrap())
                .collect::<Vec<_>>(),
            [
                "response.created",
                "response.output_text.delta",
                "response.completed"
            ]
        );
    }
    assert_eq!(
        upstream.frames(),
        sent,
        "every frame reached the upstream as sent"
    );

    let counted = stats_after(&sluice, 3, None).await;
    assert_eq!(
        counted["totals"]["requests"], 3,
        "three responses, the prewarm not one"
    );
    assert_eq!(counted["totals"]["streamed"], 3);
    assert_eq!(counted["totals"]["incomplete"], 0);
    assert_eq!(counted["by_model"]["gpt-5.5"]["requests"], 3);
    assert_eq!(counted["by_session"]["codex-session-1"]["requests"], 3);
    assert_eq!(counted["by_status"]["200"], 3);
    assert_eq!(counted["by_provider"]["openai"]["requests"], 3, "{counted}");
    // Each response's own usage (input less its cached part), the prewarm's none.
    let totals = &counted["totals"];
    assert_eq!(totals["input_tokens"], 3 * 60, "{totals}");
    assert_eq!(totals["cache_read_input_tokens"], 3 * 40, "{totals}");
    assert_eq!(totals["output_tokens"], 3 * 10, "{totals}");
    assert_eq!(totals["reasoning_output_tokens"], 3 * 4, "{totals}");

    socket.send(ws::Message::Close(None)).await.unwrap();
    wait_for("the upstream socket ends", || {
        upstream.seen.lock().unwrap().ended == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stats(&sluice, "", None).await["totals"]["requests"],
        3,
        "closing the socket adds no record"
    );
}

#[actix_rt::test]
async fn plan_windows_from_the_upgrade_are_kept_per_credential() {
    let upstream = WsUpstream::start();
    let sluice = start_sluice(&upstream, "");
    let mut socket = connect(
        &sluice,
        &[("authorization", "Bearer eyJhbGciOiJub25lIn0.e30.c2ln")],
    )
    .await
    .unwrap();
    socket
        .send(ws::Message::Text(create("gpt-5.5", "hi").into()))
        .await
        .unwrap();
    response_events(&mut socket).await;
    let stats = stats_after(&sluice, 1, None).await;
    let limits = stats["rate_limits"].as_object().unwrap();
    let (_, latest) = limits.iter().next().expect("rate limits of the credential");
    assert_eq!(latest["windows"]["5h"]["utilization"], 0.42, "{latest}");
    assert_eq!(latest["windows"]["7d"]["utilization"], 0.075, "{latest}");
}

#[actix_rt::test]
async fn a_client_that_leaves_mid_response_ends_that_response_once() {
    let upstream = WsUpstream::start();
    let sluice = start_sluice(&upstream, "");
    let mut socket = connect(&sluice, &[]).await.unwrap();
    socket
        .send(ws::Message::Text(create("gpt-5.5", "HANG").into()))
        .await
        .unwrap();
    assert!(matches!(next_frame(&mut socket).await, Frame::Text(_)));
    drop(socket);
    wait_for("the upstream socket ends", || {
        upstream.seen.lock().unwrap().ended == 1
    })
    .await;
    let stats = stats_after(&sluice, 1, None).await;
    assert_eq!(stats["totals"]["requests"], 1);
    assert_eq!(stats["totals"]["incomplete"], 1);
}

#[actix_rt::test]
async fn an_upstream_that_closes_mid_response_closes_the_socket() {
    let upstream = WsUpstream::start();
    let sluice = start_sluice(&upstream, "");
    let mut socket = connect(&sluice, &[]).await.unwrap();
    socket
        .send(ws::Message::Text(create("gpt-5.5", "CLOSE").into()))
        .await
        .unwrap();
    assert!(matches!(next_frame(&mut socket).await, Frame::Text(_)));
    assert!(matches!(next_frame(&mut socket).await, Frame::Close(_)));
    let stats = stats_after(&sluice, 1, None).await;
    assert_eq!(stats["totals"]["requests"], 1);
    assert_eq!(stats["totals"]["incomplete"], 1);
}

#[actix_rt::test]
async fn a_message_over_the_body_limit_is_refused_with_close_1009() {
    let upstream = WsUpstream::start();
    let sluice = start_sluice(&upstream, "[limits]\nmax_request_body_bytes = 1024\n");
    let mut socket = connect(&sluice, &[]).await.unwrap();
    let big = create("gpt-5.5", &"x".repeat(2000));
    socket.send(ws::Message::Text(big.into())).await.unwrap();
    let Frame::Close(Some(reason)) = next_frame(&mut socket).await else {
        panic!("expected a close frame with a reason");
    };
    assert_eq!(reason.code, ws::CloseCode::Size);
    let stats = stats_after(&sluice, 1, None).await;
    assert_eq!(stats["totals"]["requests"], 1);
    assert_eq!(stats["by_status"]["413"], 1);
    assert!(upstream.frames().is_empty(), "nothing of it went upstream");
}

#[actix_rt::test]
async fn a_refused_response_gets_the_error_event_and_is_not_forwarded() {
    let upstream = WsUpstream::start();
    let quota = "[[quotas]]\nname = \"one-a-day\"\nroute = \"/openai/v1\"\nwindow = \"day\"\nmax_requests = 1\n";
    let sluice = start_sluice(&upstream, quota);
    let mut socket = connect(&sluice, &[]).await.unwrap();
    socket
        .send(ws::Message::Text(prewarm("gpt-5.5").into()))
        .await
        .unwrap();
    response_events(&mut socket).await;
    socket
        .send(ws::Message::Text(create("gpt-5.5", "first").into()))
        .await
        .unwrap();
    assert_eq!(
        response_events(&mut socket).await.last().unwrap()["type"],
        "response.completed"
    );
    socket
        .send(ws::Message::Text(create("gpt-5.5", "second").into()))
        .await
        .unwrap();
    let events = response_events(&mut socket).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let refusal = &events[0];
    assert_eq!(refusal["type"], "error");
    assert_eq!(refusal["status"], 400);
    assert_eq!(refusal["error"]["code"], "quota_exceeded");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("sluice: quota one-a-day reached"),
        "{message}"
    );
    assert_eq!(refusal["headers"]["x-sluice-quota"], "one-a-day");
    assert_eq!(
        upstream.frames().len(),
        2,
        "the refused frame never went upstream"
    );

    let stats = stats_after(&sluice, 2, None).await;
    assert_eq!(stats["totals"]["requests"], 2);
    assert_eq!(stats["by_status"]["429"], 1);
    assert_eq!(
        stats["quotas"][0]["subjects"][0]["refused"], 1,
        "{}",
        stats["quotas"]
    );
}

#[actix_rt::test]
async fn an_open_socket_holds_a_max_concurrent_slot() {
    let upstream = WsUpstream::start();
    let quota =
        "[[quotas]]\nname = \"one-at-a-time\"\nroute = \"/openai/v1\"\nmax_concurrent = 1\n";
    let sluice = start_sluice(&upstream, quota);
    let mut first = connect(&sluice, &[]).await.unwrap();
    assert_eq!(connect(&sluice, &[]).await.err(), Some(429));
    // Responses on the open socket are not held back by its own slot.
    first
        .send(ws::Message::Text(create("gpt-5.5", "hi").into()))
        .await
        .unwrap();
    assert_eq!(
        response_events(&mut first).await.last().unwrap()["type"],
        "response.completed"
    );
    first.send(ws::Message::Close(None)).await.unwrap();
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match connect(&sluice, &[]).await {
            Ok(_) => break,
            Err(429) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("the slot was not given back: {status}"),
        }
    }
}

#[actix_rt::test]
async fn access_keys_are_checked_and_never_forwarded() {
    let upstream = WsUpstream::start();
    let sluice = sluice()
        .route("/openai/v1", &upstream.url(), &["protocol = \"openai\""])
        .team()
        .start();
    assert_eq!(connect(&sluice, &[]).await.err(), Some(401));
    let mut socket = connect(
        &sluice,
        &[
            ("x-sluice-key", ACCESS_KEY),
            ("authorization", "Bearer sk-proj-client-own-key"),
        ],
    )
    .await
    .unwrap();
    socket
        .send(ws::Message::Text(create("gpt-5.5", "hi").into()))
        .await
        .unwrap();
    response_events(&mut socket).await;
    let handshake = upstream.handshake(0);
    let names: Vec<&str> = handshake.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"x-sluice-key"), "{names:?}");
    assert!(
        handshake.contains(&(
            "authorization".into(),
            "Bearer sk-proj-client-own-key".into()
        )),
        "the client's own key goes upstream: {handshake:?}"
    );
    assert!(
        !handshake.iter().any(|(_, v)| v.contains(ACCESS_KEY)),
        "{handshake:?}"
    );
    let stats = stats_after(&sluice, 1, Some(ADMIN_TOKEN)).await;
    assert_eq!(stats["by_caller"]["alice"]["requests"], 1);
}

#[actix_rt::test]
async fn sockets_that_come_and_go_leave_no_file_descriptors_behind() {
    let upstream = WsUpstream::start();
    let sluice = start_sluice(&upstream, "");
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", sluice.pid()))
            .unwrap()
            .count()
    };
    // Warm up: the first socket may open files that stay (the store, worker pools).
    let mut socket = connect(&sluice, &[]).await.unwrap();
    socket
        .send(ws::Message::Text(create("m", "hi").into()))
        .await
        .unwrap();
    response_events(&mut socket).await;
    drop(socket);
    wait_for("the first upstream socket ends", || {
        upstream.seen.lock().unwrap().ended == 1
    })
    .await;
    stats_after(&sluice, 1, None).await;
    let before = fds();
    for n in 0..40 {
        let mut socket = connect(&sluice, &[]).await.unwrap();
        socket
            .send(ws::Message::Text(create("m", "hi").into()))
            .await
            .unwrap();
        response_events(&mut socket).await;
        if n % 2 == 0 {
            socket.send(ws::Message::Close(None)).await.unwrap();
        }
        drop(socket);
    }
    wait_for("every upstream socket ends", || {
        upstream.seen.lock().unwrap().ended == 41
    })
    .await;
    let stats = stats_after(&sluice, 41, None).await;
    assert_eq!(stats["totals"]["requests"], 41);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // A `/stats` connection may still be open on either measure: 40 leaked sockets would be
    // 40 to 80 descriptors more.
    let allowed = before + 1;
    while fds() > allowed && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fds() <= allowed,
        "{} file descriptors, {before} before",
        fds()
    );
}

#[actix_rt::test]
async fn an_access_key_as_the_bearer_takes_the_server_key() {
    let upstream = WsUpstream::start();
    let sluice = sluice()
        .route("/openai/v1", &upstream.url(), &["protocol = \"openai\""])
        .team()
        .start();
    let bearer = format!("Bearer {ACCESS_KEY}");
    let mut socket = connect(&sluice, &[("authorization", bearer.as_str())])
        .await
        .unwrap();
    socket
        .send(ws::Message::Text(create("gpt-5.5", "hi").into()))
        .await
        .unwrap();
    response_events(&mut socket).await;
    let handshake = upstream.handshake(0);
    assert!(
        !handshake.iter().any(|(_, v)| v.contains(ACCESS_KEY)),
        "{handshake:?}"
    );
    assert!(
        handshake.iter().any(|(_, v)| v.contains(SERVER_KEY)),
        "the server key went instead: {handshake:?}"
    );
    let stats = stats_after(&sluice, 1, Some(ADMIN_TOKEN)).await;
    assert_eq!(stats["by_caller"]["alice"]["requests"], 1);
    assert_eq!(
        stats["by_source"]["server_key"]["requests"], 1,
        "{}",
        stats["by_source"]
    );
}

#[actix_rt::test]
async fn a_stop_signal_lets_the_response_in_flight_end_then_closes_the_socket() {
    let upstream = WsUpstream::start();
    // The support builder's grace period is 5 s.
    let mut sluice = start_sluice(&upstream, "");
    let mut socket = connect(&sluice, &[]).await.unwrap();
    socket
        .send(ws::Message::Text(create("gpt-5.5", "first").into()))
        .await
        .unwrap();
    response_events(&mut socket).await;
    sluice.signal("TERM");
    // Between responses, the socket is closed as going away, and sluice exits well before
    // its grace period (5 s) is over.
    let Frame::Close(Some(reason)) = next_frame(&mut socket).await else {
        panic!("expected a close frame");
    };
    assert_eq!(reason.code, ws::CloseCode::Away);
    assert_eq!(sluice.wait_exit(Duration::from_secs(3)), Some(0));
}

/// A ChatGPT login token as Codex sends it: a JWT bearer.
const CHATGPT_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLXRlc3QifQ.c2lnbmF0dXJlLXRlc3Q";

#[actix_rt::test]
async fn a_chatgpt_login_socket_goes_to_the_subscription_upstream_and_never_gets_the_server_key() {
    let api = WsUpstream::start();
    let chatgpt = WsUpstream::start();
    let subscription = format!("subscription_upstream = \"{}\"", chatgpt.chatgpt_url());
    let sluice = sluice()
        .route(
            "/openai/v1",
            &api.url(),
            &["protocol = \"openai\"", &subscription],
        )
        .server_key("sk-proj-test-server-key")
        .start();
    let bearer = format!("Bearer {CHATGPT_TOKEN}");
    let mut socket = connect(
        &sluice,
        &[
            ("authorization", bearer.as_str()),
            ("chatgpt-account-id", "acct-test"),
            ("session-id", "codex-session-chatgpt"),
        ],
    )
    .await
    .unwrap();
    for n in 0..2 {
        let frame = create("gpt-5.5", &format!("turn {n}"));
        socket.send(ws::Message::Text(frame.into())).await.unwrap();
        let events = response_events(&mut socket).await;
        assert_eq!(events.last().unwrap()["type"], "response.completed");
    }
    assert_eq!(api.handshakes(), 0, "nothing of the login went to the API");
    assert_eq!(
        chatgpt.seen.lock().unwrap().paths,
        ["/backend-api/codex/responses"]
    );
    let handshake = chatgpt.handshake(0);
    let values = |name: &str| -> Vec<&str> {
        handshake
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("authorization"), [bearer.as_str()], "{handshake:?}");
    assert_eq!(values("chatgpt-account-id"), ["acct-test"]);
    assert!(
        !handshake
            .iter()
            .any(|(_, v)| v.contains("sk-proj-test-server-key")),
        "{handshake:?}"
    );
    assert_eq!(chatgpt.frames().len(), 2);

    // With no credential of its own, a socket goes to the API with the server key.
    let mut socket = connect(&sluice, &[]).await.unwrap();
    socket
        .send(ws::Message::Text(create("gpt-5.5", "hi").into()))
        .await
        .unwrap();
    response_events(&mut socket).await;
    assert_eq!(api.seen.lock().unwrap().paths, ["/v1/responses"]);
    assert!(api.handshake(0).contains(&(
        "authorization".into(),
        "Bearer sk-proj-test-server-key".into()
    )));
    assert_eq!(chatgpt.handshakes(), 1);

    let stats = stats_after(&sluice, 3, None).await;
    assert_eq!(stats["by_source"]["client_oauth"]["requests"], 2, "{stats}");
    assert_eq!(stats["by_source"]["client_oauth"]["input_tokens"], 2 * 60);
    assert_eq!(stats["by_source"]["server_key"]["requests"], 1);
    assert_eq!(
        stats["by_session"]["codex-session-chatgpt"]["requests"], 2,
        "{}",
        stats["by_session"]
    );
    let oauth = format!("client_oauth:{}", fingerprint(CHATGPT_TOKEN));
    assert_eq!(
        stats["by_credential"][&oauth]["requests"], 2,
        "{}",
        stats["by_credential"]
    );
    let windows = &stats["rate_limits"][&oauth]["windows"];
    assert_eq!(
        windows["5h"]["utilization"], 0.42,
        "{}",
        stats["rate_limits"]
    );
}

/// Asks for one response (with 4 kB of input) and reads it to its end.
async fn ask_and_finish(socket: &mut Socket, n: usize) {
    let frame = create("gpt-5.5", &format!("turn {n} {}", "x".repeat(4096)));
    socket.send(ws::Message::Text(frame.into())).await.unwrap();
    let events = response_events(socket).await;
    assert_eq!(events.last().unwrap()["type"], "response.completed");
}

#[actix_rt::test]
async fn many_responses_on_one_socket_are_counted_exactly_and_memory_stays_flat() {
    let upstream = WsUpstream::start();
    let sluice = start_sluice(&upstream, "");
    let mut socket = connect(&sluice, &[("session-id", "long-socket")])
        .await
        .unwrap();
    for n in 0..100 {
        ask_and_finish(&mut socket, n).await;
    }
    stats_after(&sluice, 100, None).await;
    let before = sluice.memory_kb("VmRSS");
    for n in 100..600 {
        ask_and_finish(&mut socket, n).await;
    }
    let stats = stats_after(&sluice, 600, None).await;
    let after = sluice.memory_kb("VmRSS");
    let totals = &stats["totals"];
    assert_eq!(totals["requests"], 600, "{totals}");
    assert_eq!(totals["streamed"], 600, "{totals}");
    assert_eq!(totals["incomplete"], 0, "{totals}");
    assert_eq!(totals["input_tokens"], 600 * 60, "{totals}");
    assert_eq!(totals["output_tokens"], 600 * 10, "{totals}");
    assert_eq!(stats["by_session"]["long-socket"]["requests"], 600);
    assert_eq!(upstream.frames().len(), 600);
    // 500 more responses (2.5 MB of frames through) must not stay in memory: a leak of their
    // frames, readers or records would be megabytes.
    assert!(
        after < before + 4096,
        "RSS grew from {before} kB to {after} kB over 500 responses"
    );
}
