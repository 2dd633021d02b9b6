//! Secrets from files: callers and keys are added, rotated and removed by writing or deleting a
//! file, with no restart.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// The status of a POST through sluice with `key` as the access key.
async fn status_with(sluice: &Sluice, key: &str) -> u16 {
    let mut response = client()
        .post(sluice.url("/anthropic/v1/messages"))
        .insert_header(("x-sluice-key", key))
        .send_body("{}")
        .await
        .unwrap();
    let _ = response.body().await;
    response.status().as_u16()
}

/// Polls until `key` gets `want`; returns how long that took (panics after 3 s).
async fn until_status(sluice: &Sluice, key: &str, want: u16) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if status_with(sluice, key).await == want {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never got {want}:\n{}", sluice.logs());
}

fn replace(path: &Path, content: &str) {
    let temp = path.with_extension("new");
    write_secret(&temp, content);
    std::fs::rename(&temp, path).unwrap();
}

#[actix_rt::test]
async fn a_caller_file_added_works_at_once_and_deleted_is_refused() {
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[access]\nkeys_dir = \"keys\"\n[[access.keys]]\nname = \"bob\"\nkey_file = \"bob.key\"")
        .file("keys/alice", "alice-key-0001\n")
        .file("bob.key", "bob-key-0002\n")
        .start();
    assert_eq!(status_with(&sluice, "alice-key-0001").await, 200);
    assert_eq!(status_with(&sluice, "bob-key-0002").await, 200);
    assert_eq!(status_with(&sluice, "carol-key-0003").await, 401);

    let carol = sluice.dir.path().join("keys/carol");
    write_secret(&carol, "carol-key-0003\n");
    let took = until_status(&sluice, "carol-key-0003", 200).await;
    assert!(took < Duration::from_secs(1), "carol's key took {took:?}");
    let seen = mock.last();
    assert!(
        seen.header("x-sluice-key").is_none(),
        "access key forwarded"
    );
    sluice.wait_for_log("access key carol added", Duration::from_secs(1));
    let body = stats_after(&sluice, 4, Some(ADMIN_TOKEN)).await;
    assert_eq!(body["by_caller"]["carol"]["requests"], 1, "{body}");

    std::fs::remove_file(&carol).unwrap();
    let took = until_status(&sluice, "carol-key-0003", 401).await;
    assert!(
        took < Duration::from_secs(1),
        "removing carol took {took:?}"
    );
    assert_eq!(status_with(&sluice, "alice-key-0001").await, 200);
    assert!(
        !sluice.logs().contains("carol-key-0003"),
        "a key reached the log"
    );
}

/// Polls with credential-less requests until the upstream sees `key`; returns how long it took.
async fn until_server_key(sluice: &Sluice, mock: &MockUpstream, key: &str) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let mut response = client()
            .post(sluice.url("/anthropic/v1/messages"))
            .send_body("{}")
            .await
            .unwrap();
        let _ = response.body().await;
        if mock.last().header("x-api-key").as_deref() == Some(key) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the upstream never saw the rotated key:\n{}", sluice.logs());
}

#[actix_rt::test]
async fn a_rotated_server_key_file_goes_with_the_next_requests() {
    let mock = MockUpstream::start();
    // Relative to $CREDENTIALS_DIRECTORY (systemd's LoadCredential), not the settings file.
    let credentials = tempfile::tempdir().unwrap();
    write_secret(
        &credentials.path().join("anthropic"),
        "sk-ant-api03-old-0001\n",
    );
    let sluice = sluice()
        .route(
            "/anthropic",
            &mock.url(),
            &["server_key_file = \"anthropic\""],
        )
        .env(
            "CREDENTIALS_DIRECTORY",
            &credentials.path().display().to_string(),
        )
        .start();
    until_server_key(&sluice, &mock, "sk-ant-api03-old-0001").await;

    replace(
        &credentials.path().join("anthropic"),
        "sk-ant-api03-new-0002\n",
    );
    let took = until_server_key(&sluice, &mock, "sk-ant-api03-new-0002").await;
    assert!(took < Duration::from_secs(1), "rotation took {took:?}");
    for _ in 0..3 {
        let mut response = client()
            .post(sluice.url("/anthropic/v1/messages"))
            .send_body("{}")
            .await
            .unwrap();
        let _ = response.body().await;
        let seen = mock.last().header("x-api-key");
        assert_eq!(seen.as_deref(), Some("sk-ant-api03-new-0002"));
    }
    let logs = sluice.logs();
    assert!(logs.contains("server key of /anthropic"), "{logs}");
    assert!(
        !logs.contains("sk-ant-api03-new-0002"),
        "a key reached the log"
    );
}

#[actix_rt::test]
async fn an_unreadable_key_file_keeps_the_current_keys() {
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route(
            "/anthropic",
            &mock.url(),
            &["server_key_file = \"server.key\""],
        )
        .file("server.key", "sk-ant-api03-kept-0001")
        .start();
    until_server_key(&sluice, &mock, "sk-ant-api03-kept-0001").await;
    std::fs::remove_file(sluice.dir.path().join("server.key")).unwrap();
    sluice.wait_for_log("settings not reloaded", Duration::from_secs(2));
    until_server_key(&sluice, &mock, "sk-ant-api03-kept-0001").await;
    assert!(
        sluice.logs().contains("routes[0].server_key_file"),
        "{}",
        sluice.logs()
    );
}

#[actix_rt::test]
#[ignore = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)"]
async fn postgres_store_url_file_is_a_secret_file_and_a_change_waits_for_a_restart() {
    // The test server trusts every local connection: the password only has to stay unseen.
    // (The blocking PostgreSQL client runs a runtime of its own: not inside this test's.)
    let url = std::thread::spawn(crate::support::pg::pg_database)
        .join()
        .unwrap()
        .replacen("postgres@", "postgres:hunter2@", 1);
    let credentials = tempfile::tempdir().unwrap();
    let url_file = credentials.path().join("store-url");
    write_secret(&url_file, &format!("{url}\n"));
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[store]\nurl_file = \"store-url\"")
        .env(
            "CREDENTIALS_DIRECTORY",
            credentials.path().to_str().unwrap(),
        )
        .start();
    sluice.wait_for_log("store open", Duration::from_secs(5));
    assert!(
        sluice.logs().contains("postgresql database"),
        "{}",
        sluice.logs()
    );
    assert_eq!(status_with(&sluice, "").await, 200);
    let body = stats_after(&sluice, 1, None).await;
    assert_eq!(body["totals"]["requests"], 1, "{body}");

    // Another URL in the file: noticed, said to need a restart, and the store stays where it is.
    replace(&url_file, &format!("{url}&application_name=elsewhere\n"));
    sluice.wait_for_log("store URL changed", Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(3);
    let reload = loop {
        let reload = stats(&sluice, "", None).await["settings"]["last_reload"].clone();
        if reload["restart_needed"].is_array() || Instant::now() > deadline {
            break reload;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reload["restart_needed"][0], "store URL", "{reload}");
    assert_eq!(status_with(&sluice, "").await, 200);
    assert_eq!(stats_after(&sluice, 2, None).await["totals"]["requests"], 2);
    assert!(!sluice.logs().contains("hunter2"), "{}", sluice.logs());
}
