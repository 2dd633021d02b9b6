//! Issue "Hot reload": settings change without a restart; a bad file never takes sluice down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::support::*;

fn settings_path(sluice: &Sluice) -> PathBuf {
    sluice.dir.path().join("sluice.toml")
}

fn with_upstream(builder: &SluiceBuilder, upstream: &str) -> String {
    builder
        .clone()
        .replace_routes("/anthropic", upstream)
        .settings_text()
}

/// Sends requests until one reaches `mock` (or 2 s pass, then panics).
async fn wait_until_served_by(sluice: &Sluice, mock: &MockUpstream) -> Duration {
    let start = Instant::now();
    let before = mock.received().len();
    while start.elapsed() < Duration::from_secs(2) {
        let mut r = client()
            .post(sluice.url("/anthropic/v1/messages"))
            .send_body("{}")
            .await
            .unwrap();
        r.body().await.unwrap();
        if mock.received().len() > before {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("new settings not applied within 2 s:\n{}", sluice.logs());
}

async fn generation(sluice: &Sluice) -> u64 {
    stats(sluice, "", None).await["settings"]["generation"]
        .as_u64()
        .unwrap()
}

async fn last_reload(sluice: &Sluice) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let value = stats(sluice, "", None).await["settings"]["last_reload"].clone();
        if !value.is_null() || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_by_rename(path: &Path, text: &str) {
    let temp = path.with_extension("toml.swp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[actix_rt::test]
async fn edit_in_place_and_rename_over_are_applied() {
    let (a, b) = (MockUpstream::start(), MockUpstream::start());
    let builder = sluice().route("/anthropic", &a.url(), &[]);
    let sluice = builder.clone().start();
    wait_until_served_by(&sluice, &a).await;
    assert_eq!(generation(&sluice).await, 1);

    std::fs::write(settings_path(&sluice), with_upstream(&builder, &b.url())).unwrap();
    wait_until_served_by(&sluice, &b).await;
    assert_eq!(generation(&sluice).await, 2);
    let reload = last_reload(&sluice).await;
    assert_eq!(reload["ok"], true, "{reload}");

    write_by_rename(&settings_path(&sluice), &with_upstream(&builder, &a.url()));
    wait_until_served_by(&sluice, &a).await;
    assert_eq!(generation(&sluice).await, 3);
}

#[actix_rt::test]
async fn stream_in_progress_finishes_on_the_old_route() {
    let (a, b) = (MockUpstream::start(), MockUpstream::start());
    let events: Vec<String> = fixture("stream-text.sse")
        .split_inclusive("\n\n")
        .map(str::to_string)
        .collect();
    let gate = Gate::new();
    // The first request gets a gated stream; later ones a plain answer.
    let (events_for_mock, gate_for_mock) = (events.clone(), gate.clone());
    let first = std::sync::atomic::AtomicBool::new(true);
    a.reply(move |_| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            Reply::GatedEvents(events_for_mock.clone(), gate_for_mock.clone())
        } else {
            Reply::json(200, "{}")
        }
    });
    let builder = sluice().route("/anthropic", &a.url(), &[]);
    let sluice = builder.clone().start();

    let mut stream = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .send_body("{}")
        .await
        .unwrap();
    let mut received = stream.next().await.unwrap().unwrap().to_vec();
    std::fs::write(settings_path(&sluice), with_upstream(&builder, &b.url())).unwrap();
    wait_until_served_by(&sluice, &b).await;

    for _ in 1..events.len() {
        gate.release();
    }
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        received,
        events.concat().as_bytes(),
        "every event of the old stream arrived"
    );
    assert!(
        !b.received().is_empty(),
        "new requests went to the new upstream"
    );
}

#[actix_rt::test]
async fn bad_files_change_nothing_and_say_why() {
    let (a, b) = (MockUpstream::start(), MockUpstream::start());
    let builder = sluice().route("/anthropic", &a.url(), &[]);
    let sluice = builder.clone().start();
    let good_b = with_upstream(&builder, &b.url());
    let cases = [
        (good_b.replace("[[routes]]", "[[routes]"), "TOML"),
        (format!("{good_b}\nmystery_key = 1\n"), "mystery_key"),
        (
            good_b.replace("upstream = ", "credential_policy = \"always\"\nupstream = "),
            "routes[0].credential_policy",
        ),
    ];
    let mut seen_at = String::new();
    for (text, named) in cases {
        std::fs::write(settings_path(&sluice), &text).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let reload = loop {
            let reload = last_reload(&sluice).await;
            if reload["at"].as_str() != Some(seen_at.as_str())
                && reload["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(named) || named == "TOML")
            {
                break reload;
            }
            assert!(
                Instant::now() < deadline,
                "no failed reload naming {named}: {reload}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        seen_at = reload["at"].as_str().unwrap().to_string();
        assert_eq!(reload["ok"], false, "{reload}");
        // Old settings keep serving.
        let mut r = client()
            .post(sluice.url("/anthropic/v1/messages"))
            .send_body("{}")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.body().await.unwrap();
        assert!(b.received().is_empty());
        assert_eq!(generation(&sluice).await, 1);
        // Let the next write land in a later second, so `at` differs.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    sluice.wait_for_log("settings not reloaded", Duration::from_secs(1));
}

#[actix_rt::test]
async fn deleted_file_keeps_settings_and_recreated_file_applies() {
    let (a, b) = (MockUpstream::start(), MockUpstream::start());
    let builder = sluice().route("/anthropic", &a.url(), &[]);
    let sluice = builder.clone().start();
    std::fs::remove_file(settings_path(&sluice)).unwrap();
    let reload = last_reload(&sluice).await;
    assert_eq!(reload["ok"], false, "{reload}");
    assert!(
        reload["error"].as_str().unwrap().contains("missing"),
        "{reload}"
    );
    wait_until_served_by(&sluice, &a).await;

    std::fs::write(settings_path(&sluice), with_upstream(&builder, &b.url())).unwrap();
    wait_until_served_by(&sluice, &b).await;
    assert_eq!(generation(&sluice).await, 2);
}

#[actix_rt::test]
async fn sighup_reloads_and_listen_change_needs_a_restart() {
    let a = MockUpstream::start();
    let builder = sluice().route("/anthropic", &a.url(), &[]);
    let sluice = builder.clone().start();
    sluice.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(2);
    while generation(&sluice).await < 2 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sluice.wait_for_log("reason=\"SIGHUP\"", Duration::from_secs(1));

    let moved = builder
        .settings_text()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    std::fs::write(settings_path(&sluice), moved).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let reload = last_reload(&sluice).await;
        if reload["restart_needed"].is_array() {
            assert_eq!(reload["ok"], true);
            assert!(
                reload["restart_needed"][0]
                    .as_str()
                    .unwrap()
                    .starts_with("listen"),
                "{reload}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{reload}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still serving where it was.
    wait_until_served_by(&sluice, &a).await;
    sluice.wait_for_log("restart sluice to apply them", Duration::from_secs(1));
}

#[actix_rt::test]
async fn rotated_server_key_takes_effect_on_reload() {
    // In-process: this test owns an env var no other test reads.
    const VAR: &str = "SLUICE_TEST_ROTATING_SERVER_KEY";
    let mock = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nworkers = 1\n[[routes]]\nprefix = \"/anthropic\"\nupstream = \"{}\"\n\
             server_key_env = \"{VAR}\"\n[stats]\nstate_file = \"\"\n",
            mock.url()
        ),
    )
    .unwrap();
    std::env::set_var(VAR, "sk-ant-api03-test-first-key");
    let settings =
        sluice::settings::Settings::load(Some(&path), &sluice::settings::EnvSource::Process)
            .unwrap();
    let running = sluice::server::start(settings, Default::default())
        .await
        .unwrap();
    let url = format!("http://{}/anthropic/v1/messages", running.addrs[0]);
    let key_seen_upstream = || async {
        let mut response = client().post(&url).send_body("{}").await.unwrap();
        response.body().await.unwrap();
        mock.last().header("x-api-key")
    };
    assert_eq!(
        key_seen_upstream().await.as_deref(),
        Some("sk-ant-api03-test-first-key")
    );

    std::env::set_var(VAR, "sk-ant-api03-test-rotated-key");
    running
        .watcher
        .send(sluice::settings::watcher::Reload { reason: "test" })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while running.state.snapshot().generation < 2 {
        assert!(Instant::now() < deadline, "reload did not apply");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        key_seen_upstream().await.as_deref(),
        Some("sk-ant-api03-test-rotated-key")
    );
    running.handle.stop(false).await;
}

/// Writes `text` into `path` in place, in two parts with `pause` between them (an editor or a
/// config tool that writes in pieces).
fn write_in_two_parts(
    path: &Path,
    text: &str,
    split_at: &str,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    use std::io::Write;
    let at = text.find(split_at).expect("split marker in the settings");
    let (first, second) = text.split_at(at);
    let (first, second) = (first.to_string(), second.to_string());
    let mut file = std::fs::File::create(path).unwrap();
    std::thread::spawn(move || {
        file.write_all(first.as_bytes()).unwrap();
        file.sync_data().unwrap();
        std::thread::sleep(pause);
        file.write_all(second.as_bytes()).unwrap();
        file.sync_data().unwrap();
    })
}

/// Statuses of `GET path` sent every 10 ms for `period`.
async fn statuses_during(
    sluice: &Sluice,
    path: &str,
    headers: &[(&str, &str)],
    period: Duration,
) -> Vec<u16> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < period {
        let mut request = client().get(sluice.url(path));
        for header in headers {
            request = request.insert_header(*header);
        }
        let mut response = request.send().await.unwrap();
        response.body().await.unwrap();
        seen.push(response.status().as_u16());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

#[actix_rt::test]
async fn a_file_still_being_written_is_not_applied_until_it_settles() {
    let (a, b) = (MockUpstream::start(), MockUpstream::start());
    let builder = sluice()
        .route("/first", &a.url(), &[])
        .route("/second", &b.url(), &[]);
    let sluice = builder.clone().start();
    let text = builder.settings_text().replace("/first", "/first-renamed");
    // The first part holds the renamed route but not yet the second one; it is valid TOML.
    let writer = write_in_two_parts(
        &settings_path(&sluice),
        &text,
        "[[routes]]\nprefix = \"/second\"",
        Duration::from_millis(250),
    );
    let seen = statuses_during(
        &sluice,
        "/second/v1/models",
        &[],
        Duration::from_millis(1500),
    )
    .await;
    writer.join().unwrap();
    assert!(
        seen.iter().all(|&s| s == 200),
        "the half-written file was applied: {seen:?}\n{}",
        sluice.logs()
    );
    // The whole file is applied once it has settled.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut r = client()
            .get(sluice.url("/first-renamed/x"))
            .send()
            .await
            .unwrap();
        r.body().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never applied:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_reload_that_would_drop_every_access_key_while_a_server_key_stays_is_refused() {
    let mock = MockUpstream::start();
    let builder = sluice().route("/anthropic", &mock.url(), &[]).team();
    let sluice = builder.clone().start();
    let keyless = statuses_during(
        &sluice,
        "/anthropic/v1/models",
        &[],
        Duration::from_millis(50),
    )
    .await;
    assert!(keyless.iter().all(|&s| s == 401), "{keyless:?}");
    // The first part is valid without [access]; the pause is longer than any settling wait.
    let writer = write_in_two_parts(
        &settings_path(&sluice),
        &builder.settings_text(),
        "[[access.keys]]",
        Duration::from_millis(1200),
    );
    let keyless = statuses_during(
        &sluice,
        "/anthropic/v1/models",
        &[],
        Duration::from_millis(2000),
    )
    .await;
    writer.join().unwrap();
    assert!(
        keyless.iter().all(|&s| s == 401),
        "keyless requests were let through: {keyless:?}\n{}",
        sluice.logs()
    );
    assert!(
        mock.received()
            .iter()
            .all(|r| r.header("x-api-key").is_none()),
        "the server key went upstream for a keyless request"
    );
    sluice.wait_for_log("every access key", Duration::from_secs(1));
    // The complete file is applied afterwards, keys and all.
    let deadline = Instant::now() + Duration::from_secs(3);
    while stats(&sluice, "", Some(ADMIN_TOKEN)).await["settings"]["last_reload"]["ok"] != true {
        assert!(Instant::now() < deadline, "{}", sluice.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let with_key = statuses_during(
        &sluice,
        "/anthropic/v1/models",
        &[("x-sluice-key", ACCESS_KEY)],
        Duration::from_millis(30),
    )
    .await;
    assert!(with_key.iter().all(|&s| s == 200), "{with_key:?}");
}

/// With every log level on and the log written next to the settings file, the watcher's
/// reaction to the log file's own writes must not feed the log.
#[test]
fn trace_logs_written_into_the_settings_directory_do_not_feed_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("sluice.toml");
    std::fs::write(
        &settings,
        "listen = \"127.0.0.1:0\"\n[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:9\"\n[stats]\nstate_file = \"\"\n",
    )
    .unwrap();
    let log = dir.path().join("sluice.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--settings")
        .arg(&settings)
        .current_dir(dir.path())
        .env("RUST_LOG", "trace")
        .env_remove("ANTHROPIC_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let size = std::fs::metadata(&log).unwrap().len();
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("listening"), "{text}");
    assert!(
        size < 256 * 1024,
        "{size} bytes of log in 1.5 s while idle; most common lines:\n{}",
        text.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
}
