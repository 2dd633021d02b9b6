//! The command line and settings: `sluice check`, env overrides, built-in defaults.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

const GOOD: &str =
    "[[routes]]\nprefix = \"/anthropic\"\nupstream = \"https://api.anthropic.com\"\n";

#[test]
fn check_accepts_a_good_file_and_names_the_bad_key() {
    let (code, out) = check(GOOD, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/anthropic"), "{out}");

    let (code, out) = check(&format!("{GOOD}credential_policy = \"sometimes\"\n"), &[]);
    assert_eq!(code, 1);
    assert!(out.contains("routes[0].credential_policy"), "{out}");

    let (code, out) = check(&format!("{GOOD}[timeouts]\nidle_ms = 0\n"), &[]);
    assert_eq!(code, 1);
    assert!(out.contains("timeouts.idle_ms"), "{out}");

    let (code, out) = check(&format!("{GOOD}[timeouts]\nidle_msec = 10\n"), &[]);
    assert_eq!(code, 1, "unknown keys are rejected");
    assert!(out.contains("idle_msec"), "{out}");

    let (code, out) = check("listen = \"127.0.0.1:4080\"\n[[routes]\nprefix = ", &[]);
    assert_eq!(code, 1, "{out}");

    let (code, out) = check(
        &format!("listen = \"0.0.0.0:4080\"\n{GOOD}"),
        &[("ANTHROPIC_API_KEY", SERVER_KEY)],
    );
    assert_eq!(code, 1, "open relay refused");
    assert!(
        out.contains("listen") && out.contains("open") || out.contains("access"),
        "{out}"
    );
    assert!(!out.contains(SERVER_KEY));
}

#[test]
fn env_override_replaces_listen() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:1\"\n{GOOD}[stats]\nstate_file = \"\"\n"),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.arg("--settings").arg(&path).current_dir(dir.path());
    let sluice = Sluice::spawn(
        command,
        &[("SLUICE__LISTEN".into(), format!("127.0.0.1:{port}"))],
        dir,
    );
    assert_eq!(sluice.addr.port(), port);
}

#[test]
fn starts_on_built_in_defaults_without_a_settings_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .current_dir(dir.path())
        .env_remove("SLUICE_SETTINGS");
    // Only the port is moved, so that the test never collides with a sluice already on :4080.
    let sluice = Sluice::spawn(
        command,
        &[("SLUICE__LISTEN".into(), "127.0.0.1:0".into())],
        dir,
    );
    sluice.wait_for_log("settings from built-in defaults", Duration::from_secs(2));
    sluice.wait_for_log(
        "route /anthropic -> https://api.anthropic.com/",
        Duration::from_secs(2),
    );
    let answer = raw_exchange(
        sluice.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
}

#[test]
fn settings_flag_and_env_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:0\"\n{GOOD}[stats]\nstate_file = \"\"\n"),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.current_dir(dir.path());
    let sluice = Sluice::spawn(
        command,
        &[("SLUICE_SETTINGS".into(), path.display().to_string())],
        dir,
    );
    sluice.wait_for_log("custom.toml", Duration::from_secs(2));
}

#[test]
fn sigterm_stops_gracefully_with_exit_0() {
    let mock = MockUpstream::start();
    let mut sluice = sluice().route("/anthropic", &mock.url(), &[]).start();
    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(Duration::from_secs(10)), Some(0));
}
