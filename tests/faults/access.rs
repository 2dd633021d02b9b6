//! Access control review: who may use the proxy and the admin endpoints, what never goes
//! upstream, the open-relay guard, and that no secret shows anywhere sluice writes.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fake::*;
use crate::support::*;
use crate::*;

const OTHER_ACCESS_KEY: &str = "sluice-test-access-key-bob-91c0";

/// Starts sluice on settings `text` (its own file in a temporary directory).
fn spawn_with_text(text: &str, env: &[(&str, &str)]) -> Sluice {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.arg("--settings").arg(&path).current_dir(dir.path());
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    Sluice::spawn(command, &env, dir)
}

/// Runs sluice on settings `text` expecting it to refuse to start: (exit code, output).
fn refused_start(text: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("--settings")
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("ANTHROPIC_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut output);
    let _ = child.stderr.take().unwrap().read_to_string(&mut output);
    (code, output)
}

fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

#[test]
fn secrets_are_compared_in_constant_time() {
    // A review kept honest: every comparison with a configured secret goes through `subtle`
    // (`ct_eq`), never `==`, `starts_with` or a map lookup keyed by the secret.
    let code: String = ["/src/access.rs", "/src/credentials.rs"]
        .iter()
        .map(|file| {
            let path = format!("{}{file}", env!("CARGO_MANIFEST_DIR"));
            let source = std::fs::read_to_string(path).unwrap();
            source.split("#[cfg(test)]").next().unwrap().to_string()
        })
        .collect();
    let comparisons: Vec<&str> = code
        .lines()
        .filter(|l| l.contains(".expose()") && !l.trim_start().starts_with("//"))
        .filter(|l| {
            l.contains("==") || l.contains("!=") || l.contains(".eq(") || l.contains("ct_eq")
        })
        .collect();
    assert!(
        comparisons.iter().filter(|l| l.contains("ct_eq")).count() >= 2,
        "access keys and the admin token are compared with ct_eq: {comparisons:#?}"
    );
    for line in &comparisons {
        assert!(line.contains("ct_eq"), "not constant-time: {line}");
    }
    // The access-key lookup goes by the digest of the presented value (never a map keyed by
    // the secret itself, nor a walk over every key), then compares the key found in constant
    // time.
    let lookup = code
        .split("fn key_name")
        .nth(1)
        .and_then(|rest| rest.split("\n    }\n").next())
        .expect("AccessRules::key_name");
    assert!(
        lookup.contains("digest(presented)") && lookup.contains("ct_eq"),
        "{lookup}"
    );
    assert!(!lookup.contains("for "), "{lookup}");
}

#[actix_rt::test]
async fn stats_and_metrics_need_exactly_the_admin_token() {
    let healthy = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &healthy.url(), &[])
        .toml("[access]")
        .access_key("alice", ACCESS_KEY)
        .env("TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .start();
    let almost = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
    let refused: Vec<(&str, String)> = vec![
        ("authorization", "Bearer wrong".into()),
        ("authorization", ADMIN_TOKEN.into()),
        ("authorization", format!("Basic {ADMIN_TOKEN}")),
        ("authorization", format!("Bearer {almost}")),
        ("authorization", format!("Bearer {ADMIN_TOKEN}x")),
        ("authorization", format!("Bearer {ACCESS_KEY}")),
        ("x-api-key", ADMIN_TOKEN.into()),
        ("x-sluice-key", ADMIN_TOKEN.into()),
        ("x-admin-token", ADMIN_TOKEN.into()),
    ];
    for path in ["/stats", "/metrics", "/stats?since=1h"] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        assert_sluice_error(&answer(sluice.addr, request.as_bytes()), 401, "admin_token");
        for (name, value) in &refused {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\n{name}: {value}\r\nConnection: close\r\n\r\n"
            );
            let answer = answer(sluice.addr, request.as_bytes());
            assert_eq!(answer.status, 401, "{path} with {name}: {value}");
            assert_sluice_error(&answer, 401, "admin_token");
            assert!(!answer.raw.contains(ADMIN_TOKEN) && !answer.raw.contains(almost));
        }
        // RFC 9110's `auth-scheme 1*SP credentials`, tabs tolerated too.
        for scheme in ["Bearer ", "bearer ", "BEARER ", "Bearer  ", "Bearer\t"] {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {scheme}{ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
            );
            assert_eq!(
                answer(sluice.addr, request.as_bytes()).status,
                200,
                "{path}"
            );
        }
    }
    // /healthz is always open; the admin token is not an access key for the proxy.
    let health = answer(
        sluice.addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(health.status, 200);
    let proxied = answer(
        sluice.addr,
        &post(
            "/anthropic/v1/messages",
            &format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"),
        ),
    );
    assert_sluice_error(&proxied, 401, "access_key_missing");
    assert!(healthy.received().is_empty());
}

#[actix_rt::test]
async fn without_an_admin_token_stats_are_open_and_an_empty_token_is_no_token() {
    let healthy = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &healthy.url(), &[])
        .env("TEST_ADMIN_TOKEN", "")
        .start();
    for path in ["/stats", "/metrics"] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        assert_eq!(answer(sluice.addr, request.as_bytes()).status, 200);
        // An empty bearer token does not match an unset one in some odd way either.
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \r\nConnection: close\r\n\r\n"
        );
        assert_eq!(answer(sluice.addr, request.as_bytes()).status, 200);
    }
}

#[actix_rt::test]
async fn a_key_in_the_wrong_header_neither_admits_nor_goes_upstream() {
    let fake = FakeUpstream::start(answers_ok());
    let sluice = sluice()
        .route("/anthropic", &fake.url(), &[])
        .toml("[access]")
        .access_key("alice", ACCESS_KEY)
        .access_key("bob", OTHER_ACCESS_KEY)
        .server_key(SERVER_KEY)
        .env("TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .start();
    // Alone in a header that is not an access-key header: not admitted, nothing sent upstream.
    for header in [
        format!("X-Access-Key: {ACCESS_KEY}\r\n"),
        format!("Authorization: {ACCESS_KEY}\r\n"),
        format!("Authorization: Basic {ACCESS_KEY}\r\n"),
        format!("Proxy-Authorization: Bearer {ACCESS_KEY}\r\n"),
        format!("X-Sluice-Key: Bearer {ACCESS_KEY}\r\n"),
        format!("X-Sluice-Key: {ADMIN_TOKEN}\r\n"),
    ] {
        let answer = answer(sluice.addr, &post("/anthropic/v1/messages", &header));
        assert_eq!(answer.status, 401, "{header}: {}", answer.raw);
        assert!(answer.raw.contains("access_key_"), "{}", answer.raw);
    }
    assert_eq!(fake.accepted(), 0);
    // Admitted by a valid key, with secrets copied into other headers: none of them goes up.
    let headers = format!(
        "X-Sluice-Key: {ACCESS_KEY}\r\n\
         X-Forward-Me: {OTHER_ACCESS_KEY}\r\n\
         Authorization: {OTHER_ACCESS_KEY}\r\n\
         Proxy-Authorization: Bearer {ACCESS_KEY}\r\n\
         X-Api-Key: {ADMIN_TOKEN}\r\n\
         X-Debug: Bearer {ADMIN_TOKEN}\r\n\
         X-Stainless-Lang: js\r\n"
    );
    let answer = answer(sluice.addr, &post("/anthropic/v1/messages", &headers));
    assert_eq!(answer.status, 200, "{}", answer.raw);
    let conn = &fake.conns()[0];
    let head = conn.head.clone().unwrap();
    for secret in [ACCESS_KEY, OTHER_ACCESS_KEY, ADMIN_TOKEN] {
        assert!(!head.contains(secret), "{secret} went upstream:\n{head}");
    }
    assert!(conn.header("x-sluice-key").is_none());
    assert_eq!(conn.header("x-stainless-lang").as_deref(), Some("js"));
    // Those were not client credentials: the server key filled in.
    assert_eq!(conn.header("x-api-key").as_deref(), Some(SERVER_KEY));
    assert!(conn.header("authorization").is_none(), "{head}");
}

const RELAY: &str = "[[routes]]\nprefix = \"/anthropic\"\nupstream = \"http://127.0.0.1:9\"\nserver_key_env = \"TEST_SERVER_KEY\"\n[stats]\nstate_file = \"\"\n";

#[test]
fn open_relay_is_refused_at_start_on_any_non_loopback_address() {
    for (listen, env) in [
        ("listen = \"0.0.0.0:0\"\n", vec![]),
        ("listen = \"[::]:0\"\n", vec![]),
        ("", vec![("SLUICE__LISTEN", "0.0.0.0:0")]),
    ] {
        let mut env = env;
        env.push(("TEST_SERVER_KEY", SERVER_KEY));
        let (code, output) = refused_start(&format!("{listen}{RELAY}"), &env);
        assert_eq!(
            code,
            Some(1),
            "{listen} {env:?} must refuse to start: {output}"
        );
        assert!(output.contains("listen"), "{output}");
        assert!(output.contains("access"), "{output}");
        assert!(!output.contains(SERVER_KEY), "{output}");
    }
}

#[actix_rt::test]
async fn non_loopback_with_access_keys_or_without_server_key_starts_and_guards() {
    let fake = FakeUpstream::start(answers_ok());
    let relay = RELAY.replace("http://127.0.0.1:9", &fake.url());
    // With access keys: starts, and every proxied request needs a key.
    let sluice = spawn_with_text(
        &format!(
            "listen = \"0.0.0.0:0\"\n{relay}[[access.keys]]\nname = \"alice\"\nkey_env = \"K_ALICE\"\n"
        ),
        &[("TEST_SERVER_KEY", SERVER_KEY), ("K_ALICE", ACCESS_KEY)],
    );
    let addr = loopback(sluice.addr);
    assert_sluice_error(
        &answer(addr, &post("/anthropic/v1/messages", "")),
        401,
        "access_key_missing",
    );
    assert_eq!(fake.accepted(), 0);
    drop(sluice);
    // Without a server key there is nothing to relay: starts.
    let sluice = spawn_with_text(&format!("listen = \"0.0.0.0:0\"\n{relay}"), &[]);
    let answer = answer(loopback(sluice.addr), &post("/anthropic/v1/messages", ""));
    assert_eq!(answer.status, 200);
    assert!(fake.conns()[0].header("x-api-key").is_none());
}

#[actix_rt::test]
async fn reload_cannot_turn_a_guarded_public_sluice_into_an_open_relay() {
    let fake = FakeUpstream::start(answers_ok());
    let relay = RELAY.replace("http://127.0.0.1:9", &fake.url());
    let guarded = format!(
        "listen = \"0.0.0.0:0\"\n{relay}[[access.keys]]\nname = \"alice\"\nkey_env = \"K_ALICE\"\n"
    );
    let sluice = spawn_with_text(
        &guarded,
        &[("TEST_SERVER_KEY", SERVER_KEY), ("K_ALICE", ACCESS_KEY)],
    );
    let addr = loopback(sluice.addr);
    let path = sluice.dir.path().join("sluice.toml");
    for open in [
        // Same listen, no keys: refused by validation.
        format!("listen = \"0.0.0.0:0\"\n{relay}"),
        // Loopback in the file, but the running listener stays public.
        format!("listen = \"127.0.0.1:0\"\n{relay}"),
    ] {
        std::fs::write(&path, &open).unwrap();
        sluice.signal("HUP");
        std::thread::sleep(Duration::from_millis(700));
        let answer = answer(addr, &post("/anthropic/v1/messages", ""));
        assert_sluice_error(&answer, 401, "access_key_missing");
        assert_eq!(
            fake.accepted(),
            0,
            "the server key was relayed without an access key"
        );
    }
}

#[actix_rt::test]
async fn reload_dropping_access_keys_on_the_same_public_listen_is_refused() {
    let fake = FakeUpstream::start(answers_ok());
    let relay = RELAY.replace("http://127.0.0.1:9", &fake.url());
    let sluice = spawn_with_text(
        &format!(
            "listen = \"0.0.0.0:0\"\n{relay}[[access.keys]]\nname = \"alice\"\nkey_env = \"K_ALICE\"\n"
        ),
        &[("TEST_SERVER_KEY", SERVER_KEY), ("K_ALICE", ACCESS_KEY)],
    );
    std::fs::write(
        sluice.dir.path().join("sluice.toml"),
        format!("listen = \"0.0.0.0:0\"\n{relay}"),
    )
    .unwrap();
    sluice.signal("HUP");
    sluice.wait_for_log("settings not reloaded", Duration::from_secs(3));
    let answer = answer(loopback(sluice.addr), &post("/anthropic/v1/messages", ""));
    assert_sluice_error(&answer, 401, "access_key_missing");
    assert_eq!(fake.accepted(), 0);
}

#[actix_rt::test]
async fn no_secret_appears_in_logs_stats_metrics_store_or_answers() {
    let mock = MockUpstream::start();
    mock.reply(|req| match req.header("x-mock").as_deref() {
        Some("stream") => Reply::sse(&fixture("stream-text.sse")),
        Some("401") => Reply::json(
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        ),
        _ => Reply::json(200, &fixture("message.json")),
    });
    let state = tempfile::tempdir().unwrap();
    let store_file = state.path().join("sluice.db");
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .route(
            "/server",
            &mock.url(),
            &["credential_policy = \"server_only\""],
        )
        .toml("[access]")
        .access_key("alice", ACCESS_KEY)
        .access_key("bob", OTHER_ACCESS_KEY)
        .server_key(SERVER_KEY)
        .env("TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "debug")
        .toml(&format!("[store]\npath = \"{}\"", store_file.display()))
        .start();
    const WRONG_KEY: &str = "sk-ant-api03-test-wrong-key-4242";
    const BEARER: &str = "sk-ant-api03-test-plain-bearer-1111";
    let secrets = [
        SERVER_KEY,
        CLIENT_API_KEY,
        CLIENT_OAUTH,
        ACCESS_KEY,
        OTHER_ACCESS_KEY,
        ADMIN_TOKEN,
        WRONG_KEY,
        BEARER,
    ];
    let mut answers = String::new();
    let requests: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "/anthropic/v1/messages",
            vec![
                ("x-sluice-key", ACCESS_KEY.into()),
                ("x-api-key", CLIENT_API_KEY.into()),
            ],
        ),
        (
            "/anthropic/v1/messages",
            vec![
                ("x-sluice-key", ACCESS_KEY.into()),
                ("authorization", format!("Bearer {CLIENT_OAUTH}")),
                ("x-mock", "stream".into()),
            ],
        ),
        (
            "/anthropic/v1/messages",
            vec![
                ("x-sluice-key", OTHER_ACCESS_KEY.into()),
                ("authorization", format!("Bearer {BEARER}")),
                ("x-mock", "401".into()),
            ],
        ),
        (
            "/anthropic/v1/messages",
            vec![("authorization", format!("Bearer {ACCESS_KEY}"))],
        ),
        (
            "/anthropic/v1/messages",
            vec![("x-api-key", OTHER_ACCESS_KEY.into())],
        ),
        (
            "/anthropic/v1/messages",
            vec![("x-sluice-key", WRONG_KEY.into())],
        ),
        (
            "/anthropic/v1/messages",
            vec![("x-sluice-key", ADMIN_TOKEN.into())],
        ),
        (
            "/anthropic/v1/messages",
            vec![("x-api-key", CLIENT_API_KEY.into())],
        ),
        (
            "/server/v1/messages",
            vec![
                ("x-sluice-key", ACCESS_KEY.into()),
                ("x-api-key", CLIENT_API_KEY.into()),
            ],
        ),
        (
            "/nowhere/v1/messages",
            vec![("x-sluice-key", ACCESS_KEY.into())],
        ),
        (
            "/anthropic/../v1",
            vec![("x-sluice-key", ACCESS_KEY.into())],
        ),
        (
            "/stats",
            vec![("authorization", format!("Bearer {WRONG_KEY}"))],
        ),
        (
            "/metrics",
            vec![("authorization", format!("Bearer {ACCESS_KEY}"))],
        ),
    ];
    for (path, headers) in &requests {
        let method = if path.starts_with("/stats") || path.starts_with("/metrics") {
            "GET"
        } else {
            "POST"
        };
        let mut head = format!("{method} {path}?key={WRONG_KEY} HTTP/1.1\r\nHost: localhost\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(
            "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        );
        let raw = exchange(sluice.addr, head.as_bytes(), Duration::from_secs(5));
        answers.push_str(&String::from_utf8_lossy(&raw));
    }
    let stats = stats_after(&sluice, 11, Some(ADMIN_TOKEN)).await;
    let mut everything = format!("{answers}\n{stats}\n");
    for accept in ["text/plain", "application/openmetrics-text"] {
        let mut metrics = client()
            .get(sluice.url("/metrics"))
            .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
            .insert_header(("accept", accept))
            .send()
            .await
            .unwrap();
        let body = metrics.body().await.unwrap();
        everything.push_str(&String::from_utf8_lossy(&body));
    }
    // The logs and every byte of the store after shutdown.
    let mut sluice = sluice;
    sluice.signal("TERM");
    sluice.wait_exit(Duration::from_secs(10));
    everything.push_str(&sluice.logs());
    for entry in std::fs::read_dir(state.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        everything.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(store_file.exists(), "the store was written");
    assert!(
        everything.contains("\"requests\":11"),
        "all requests counted and flushed"
    );
    assert!(everything.contains("DEBUG"), "debug logs were captured");
    for secret in secrets {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
}

/// With a catch-all route, sluice's own paths — any method, any letter case, any spelling, and
/// everything below them — are answered by sluice and never go upstream with the server key.
#[actix_rt::test]
async fn admin_paths_are_never_forwarded_whatever_the_method_case_or_suffix() {
    let fake = FakeUpstream::start(answers_ok());
    let sluice = sluice()
        .route("/", &fake.url(), &[])
        .server_key(SERVER_KEY)
        .start();
    let request = |method: &str, path: &str| {
        let body = if method == "POST" {
            "Content-Length: 2\r\n\r\n{}"
        } else {
            "\r\n"
        };
        answer(
            sluice.addr,
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{body}")
                .as_bytes(),
        )
    };
    for (method, path) in [
        ("POST", "/stats"),
        ("PUT", "/stats"),
        ("DELETE", "/metrics"),
        ("POST", "/healthz"),
        ("OPTIONS", "/healthz"),
        ("POST", "/dashboard"),
        ("POST", "/usage"),
        ("PUT", "/dashboard/app.js"),
    ] {
        let answer = request(method, path);
        assert_sluice_error(&answer, 405, "method_not_allowed");
        assert_eq!(
            answer.header("allow").as_deref(),
            Some("GET, HEAD"),
            "{method} {path}"
        );
    }
    for (method, path) in [
        ("GET", "/stats/"),
        ("GET", "/STATS"),
        ("GET", "/Healthz"),
        ("GET", "/metrics/x"),
        ("POST", "/metrics/x"),
        ("GET", "/Dashboard"),
        ("GET", "/USAGE"),
        ("POST", "/DASHBOARD/x"),
        ("GET", "//stats"),
        ("GET", "/./stats"),
        ("GET", "/%73tats"),
        ("GET", "/%2573tats"),
        ("GET", "/stats;x"),
    ] {
        assert_sluice_error(&request(method, path), 404, "reserved_path");
    }
    for path in [
        "/healthz",
        "/stats",
        "/metrics",
        "/dashboard",
        "/dashboard/app.js",
    ] {
        assert_eq!(request("GET", path).status, 200, "GET {path}");
        assert_eq!(request("HEAD", path).status, 200, "HEAD {path}");
    }
    assert_eq!(fake.accepted(), 0, "an admin path went upstream");
    // Everything else still goes upstream.
    for path in ["/v1/messages", "/statsx", "/v1/stats"] {
        assert_eq!(request("POST", path).status, 200, "POST {path}");
    }
    assert_eq!(fake.accepted(), 3);
}

#[test]
fn check_refuses_a_route_under_an_admin_path_in_any_case_and_names_them_for_a_catch_all() {
    let route = |prefix: &str| {
        format!("[[routes]]\nprefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:9\"\n")
    };
    for prefix in ["/stats", "/STATS", "/Metrics/x", "/dashboard/team"] {
        let (code, output) = check(&route(prefix), &[]);
        assert_eq!(code, 1, "{prefix}: {output}");
        assert!(output.contains("admin path"), "{prefix}: {output}");
    }
    let (code, output) = check(&route("/"), &[]);
    assert_eq!(code, 0, "{output}");
    assert!(
        ["/healthz", "/stats", "/metrics", "/usage", "/dashboard"]
            .iter()
            .all(|path| output.contains(path))
            && output.contains("never forwarded"),
        "{output}"
    );
}
