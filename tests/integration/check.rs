//! `sluice check` on broken and risky files: the whole list of errors and warnings, and
//! overrides named in the errors they cause.

use std::path::Path;
use std::process::Command;

use crate::support::*;

const ROUTE: &str = "[[routes]]\nprefix = \"/anthropic\"\nupstream = \"http://127.0.0.1:9\"\n";

/// The lines of `out` that start with `prefix`, without it.
fn lines<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

#[test]
fn a_broken_file_gets_every_error_at_once() {
    let text = "listen = \"localhost\"\n\
                [[routes]]\nprefix = \"anthropic\"\nupstream = \"http://127.0.0.1:9\"\n\
                [[routes]]\nprefix = \"/b\"\nupstream = \"ftp://x\"\n\
                [timeouts]\nidle_ms = 0\nconnect_ms = 0\n\
                [stats]\nflush_interval_s = 0\n";
    let (code, out) = check(text, &[]);
    assert_eq!(code, 1, "{out}");
    let errors = lines(&out, "error: ");
    let keys: Vec<&str> = errors
        .iter()
        .map(|e| e.split('`').nth(1).unwrap_or(e))
        .collect();
    assert_eq!(
        keys,
        vec![
            "listen",
            "routes[0].prefix",
            "routes[1].upstream",
            "timeouts.connect_ms",
            "timeouts.idle_ms",
            "stats.flush_interval_s"
        ],
        "{out}"
    );
    assert!(out.ends_with("6 errors, 0 warnings\n"), "{out}");
}

#[test]
fn missing_secrets_are_all_reported() {
    let text = format!(
        "{ROUTE}server_key_file = \"nope.key\"\n[access]\n\
         [[access.keys]]\nname = \"alice\"\nkey_env = \"NO_SUCH_VAR_A\"\n\
         [[access.keys]]\nname = \"bob\"\nkey_file = \"bob.key\"\n\
         [admin]\ntoken_file = \"admin.token\"\n"
    );
    let (code, out) = check(&text, &[]);
    assert_eq!(code, 1, "{out}");
    let keys: Vec<&str> = lines(&out, "error: ")
        .iter()
        .map(|e| e.split('`').nth(1).unwrap())
        .collect();
    assert_eq!(
        keys,
        vec![
            "routes[0].server_key_file",
            "access.keys[0].key_env",
            "access.keys[1].key_file",
            "admin.token_file"
        ],
        "{out}"
    );
}

#[test]
fn a_risky_file_starts_but_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("occupied"), "a file, not a directory").unwrap();
    write_secret(&dir.path().join("keys/alice"), "alice-key-1");
    let exposed = dir.path().join("keys/bob");
    write_secret(&exposed, "bob-key-2");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "listen = \"0.0.0.0:4080\"\n{ROUTE}\
         [[routes]]\nprefix = \"/locked\"\nupstream = \"http://127.0.0.1:9\"\n\
         credential_policy = \"server_only\"\nserver_key_env = \"NO_SUCH_KEY\"\n\
         [access]\nkeys_dir = \"keys\"\n[admin]\ntoken_env = \"NO_SUCH_TOKEN\"\n\
         [stats]\nstate_file = \"occupied/stats.json\"\n\
         [store]\npath = \"occupied/sluice.db\"\n"
    );
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--settings"])
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.starts_with("ok: "), "{out}");
    let warnings = lines(&out, "warning: ");
    let expected = [
        "store.path occupied/sluice.db",
        "stats.state_file occupied/stats.json",
        "listen 0.0.0.0:4080 reaches beyond loopback and no admin token",
        "listen 0.0.0.0:4080 reaches beyond loopback without TLS",
        "route /locked is server_only but has no server key",
        "keys/bob is readable by group or others (mode 644)",
    ];
    assert_eq!(warnings.len(), expected.len(), "{out}");
    for (warning, want) in warnings.iter().zip(expected) {
        assert!(warning.contains(want), "{warning:?} lacks {want:?}\n{out}");
    }
    assert!(out.ends_with("0 errors, 6 warnings\n"), "{out}");
    assert!(!out.contains("bob-key-2") && !out.contains("alice-key-1"));
}

#[test]
fn the_store_url_file_is_read_and_checked_like_every_secret_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    let url_file = credentials.join("store-url");
    write_secret(&url_file, "postgresql://sluice:hunter2@db.internal/usage\n");
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, format!("{ROUTE}[store]\nurl_file = \"store-url\"\n")).unwrap();
    let run = |credentials_directory: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["check", "--settings"])
            .arg(&path)
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = credentials_directory {
            command.env("CREDENTIALS_DIRECTORY", dir);
        }
        let output = command.output().unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!out.contains("hunter2"), "{out}");
        (output.status.code(), out)
    };
    // Under $CREDENTIALS_DIRECTORY: found, and its mode is warned about.
    let (code, out) = run(Some(&credentials));
    assert_eq!(code, Some(0), "{out}");
    let warnings = lines(&out, "warning: ");
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].contains("credentials/store-url is readable by group or others (mode 640)"),
        "{out}"
    );
    // Without it, relative to the settings file's directory, where there is no such file.
    let (code, out) = run(None);
    assert_eq!(code, Some(1), "{out}");
    let errors = lines(&out, "error: ");
    assert_eq!(errors.len(), 1, "{out}");
    assert!(
        errors[0].contains("store.url_file") && errors[0].contains("store-url"),
        "{out}"
    );
    // An empty file, or an unset variable, would stop a start: an error too.
    write_secret(&url_file, "\n");
    let (code, out) = run(Some(&credentials));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("`store.url_file`") && out.contains("store-url is empty"),
        "{out}"
    );
    std::fs::write(
        &path,
        format!("{ROUTE}[store]\nurl_env = \"NO_SUCH_STORE_URL\"\n"),
    )
    .unwrap();
    let (code, out) = run(None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("$NO_SUCH_STORE_URL is unset or empty"),
        "{out}"
    );
}

#[test]
fn overrides_reach_routes_and_are_named_in_errors() {
    let (code, out) = check(
        ROUTE,
        &[("SLUICE__ROUTES__0__UPSTREAM", "http://127.0.0.1:7")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("route /anthropic -> http://127.0.0.1:7/"),
        "{out}"
    );

    let (code, out) = check(ROUTE, &[("SLUICE__TIMEOUTS__IDLE_MS", "0")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`timeouts.idle_ms`") && out.contains("set by SLUICE__TIMEOUTS__IDLE_MS"),
        "{out}"
    );

    let (code, out) = check(
        ROUTE,
        &[("SLUICE__ROUTES__0__CREDENTIAL_POLICY", "sometimes")],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("set by SLUICE__ROUTES__0__CREDENTIAL_POLICY"),
        "{out}"
    );

    let (code, out) = check(
        ROUTE,
        &[("SLUICE__ROUTES__1__UPSTREAM", "http://127.0.0.1:7")],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "SLUICE__ROUTES__1__UPSTREAM overrides an entry the settings file does not have"
        ),
        "{out}"
    );

    let (code, out) = check(ROUTE, &[("SLUICE__LISTN", "127.0.0.1:1")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("listn") && out.contains("set by SLUICE__LISTN"),
        "{out}"
    );
}

#[test]
fn a_failed_start_says_why_once_even_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, format!("{ROUTE}[timeouts]\nidle_ms = 0\n")).unwrap();
    for json in [false, true] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command.arg("--settings").arg(&path);
        if json {
            command.args(["--log-format", "json"]);
        }
        let output = command.env("RUST_LOG", "info").output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.matches("timeouts.idle_ms").count(), 1, "{stderr}");
        if json {
            for line in stderr.lines() {
                let event: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert_eq!(event["level"], "ERROR", "{line}");
            }
        }
    }
}
