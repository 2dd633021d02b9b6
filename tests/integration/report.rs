//! `sluice report` from the command line: where it looks, and how it says what is missing.

use std::net::TcpListener;
use std::process::Command;

const ROUTE: &str =
    "[[routes]]\nprefix = \"/anthropic\"\nupstream = \"https://api.anthropic.com\"\n";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `sluice --settings <file with listen> report ARGS`; returns exit code, stdout, stderr.
fn report(listen_port: u16, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:{listen_port}\"\n{ROUTE}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--settings")
        .arg(&path)
        .arg("report")
        .args(args)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn report_asks_the_sluice_of_the_settings_and_says_when_it_is_not_running() {
    let port = free_port();
    let (code, out, err) = report(port, &["daily"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err.trim(),
        format!(
            "error: sluice is not running at http://127.0.0.1:{port} (connection refused); \
             start it, or pass --url or --db"
        )
    );
}

#[test]
fn report_url_flag_wins_over_the_settings() {
    let other = free_port();
    let (code, _, err) = report(
        free_port(),
        &["monthly", "--url", &format!("http://127.0.0.1:{other}")],
    );
    assert_eq!(code, 1);
    assert!(err.contains(&format!("127.0.0.1:{other}")), "{err}");
}

#[test]
fn report_db_names_a_missing_database_and_a_file_that_holds_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let (code, _, err) = report(free_port(), &["daily", "--db", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no database at") && err.contains("nope.db"),
        "{err}"
    );

    let present = dir.path().join("sluice.db");
    std::fs::write(&present, b"").unwrap();
    let (code, _, err) = report(free_port(), &["daily", "--db", present.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("sluice.db") && err.contains("holds no sluice store"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&present).unwrap(),
        b"",
        "the file is only read"
    );
}

#[test]
fn report_refuses_a_date_it_cannot_read() {
    let (code, _, err) = report(free_port(), &["daily", "--since", "last tuesday"]);
    assert_eq!(code, 1);
    assert!(err.contains("\"last tuesday\" is not a date"), "{err}");
}

#[test]
fn report_sends_the_admin_token_named_by_the_settings() {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut head = String::new();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let body =
            "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"no\"}}";
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        head
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\n{ROUTE}[admin]\ntoken_env = \"REPORT_TEST_TOKEN\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--settings")
        .arg(&path)
        .args(["report", "daily"])
        .env("REPORT_TEST_TOKEN", "t0ken-from-env")
        .output()
        .unwrap();
    let head = server.join().unwrap();
    assert!(
        head.contains("authorization: bearer t0ken-from-env\r\n"),
        "{head}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("refused the admin token (401)"), "{err}");
    assert!(
        !err.contains("t0ken-from-env"),
        "the token never shows: {err}"
    );
}

/// `/dashboard` is served by sluice itself: the page without a token even when one is set (it
/// holds no data), its files from the binary with a policy that keeps it on this host, and
/// nothing else under the path.
#[actix_rt::test]
async fn dashboard_page_and_files_are_served_from_the_binary() {
    use crate::support::{client, sluice, MockUpstream};
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .team()
        .start();
    let mut page = client().get(sluice.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers().get("content-security-policy").unwrap();
    assert!(csp.to_str().unwrap().contains("default-src 'none'"));
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    assert!(html.contains("dashboard/uplot.min.js"), "{html}");
    for file in ["app.js", "app.css", "uplot.min.js", "uplot.min.css"] {
        let response = client()
            .get(sluice.url(&format!("/dashboard/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{file}");
    }
    let slash = client()
        .get(sluice.url("/dashboard/"))
        .send()
        .await
        .unwrap();
    assert_eq!(slash.status(), 308);
    assert_eq!(slash.headers().get("location").unwrap(), "/dashboard");
    let missing = client()
        .get(sluice.url("/dashboard/secrets.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(
        mock.received().is_empty(),
        "nothing under /dashboard goes upstream"
    );
}
