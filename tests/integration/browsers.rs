//! Browsers on the same machine: a page that rebinds its name to 127.0.0.1 reads nothing of
//! sluice's, and pages from elsewhere cannot make the browser spend through a proxied route;
//! clients that are not browsers notice nothing.

use std::time::Duration;

use crate::support::*;

/// A raw GET or POST with the given `Host` and extra header lines; the answer's text.
fn exchange(sluice: &Sluice, method: &str, path: &str, host: &str, extra: &str) -> String {
    let body = if method == "POST" { "{}" } else { "" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    raw_exchange(sluice.addr, request.as_bytes(), Duration::from_secs(5))
}

fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or_default()
}

#[test]
fn a_rebound_host_name_reads_no_stats_usage_metrics_or_dashboard() {
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[browsers]\nallowed_hosts = [\"sluice.test\"]")
        .start();
    let port = sluice.addr.port();
    for path in ["/stats", "/usage", "/metrics", "/dashboard"] {
        let rebound = exchange(
            &sluice,
            "GET",
            path,
            &format!("rebind.evil.example:{port}"),
            "",
        );
        assert_eq!(status(&rebound), "403", "{path}: {rebound}");
        assert!(
            rebound.contains("x-sluice-error: unknown_host"),
            "{rebound}"
        );
        assert!(
            rebound.contains(
                r#"{"type":"error","error":{"type":"permission_error","message":"sluice: "#
            ),
            "{rebound}"
        );
        for known in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            format!("sluice.test:{port}"),
        ] {
            let answer = exchange(&sluice, "GET", path, &known, "");
            assert_eq!(status(&answer), "200", "{path} as {known}: {answer}");
        }
    }
    let health = exchange(&sluice, "GET", "/healthz", "rebind.evil.example", "");
    assert_eq!(status(&health), "200", "{health}");
}

#[test]
fn browser_requests_from_other_pages_are_refused_on_proxied_routes() {
    let mock = MockUpstream::start();
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[browsers]\nallowed_origins = [\"https://app.example.com\"]")
        .start();
    let port = sluice.addr.port();
    let here = format!("127.0.0.1:{port}");
    let path = "/anthropic/v1/messages";
    for (host, extra) in [
        (
            here.clone(),
            "origin: https://evil.example\r\nsec-fetch-site: cross-site\r\n",
        ),
        (here.clone(), "origin: https://evil.example\r\n"),
        (here.clone(), "sec-fetch-site: cross-site\r\n"),
        (
            here.clone(),
            "origin: http://localhost:3000\r\nsec-fetch-site: same-site\r\n",
        ),
        (
            format!("rebind.evil.example:{port}"),
            &*format!(
                "origin: http://rebind.evil.example:{port}\r\nsec-fetch-site: same-origin\r\n"
            ),
        ),
    ] {
        let answer = exchange(&sluice, "POST", path, &host, extra);
        assert_eq!(status(&answer), "403", "{extra}: {answer}");
        assert!(answer.contains("\"permission_error\""), "{answer}");
    }
    assert!(
        mock.received().is_empty(),
        "a refused request went upstream"
    );
    // A CLI or SDK (no origin, no sec-fetch-site), the page on sluice's own origin, and a
    // configured origin are served.
    for (host, extra) in [
        ("anything.example".to_string(), String::new()),
        (
            here.clone(),
            format!("origin: http://{here}\r\nsec-fetch-site: same-origin\r\n"),
        ),
        (
            here.clone(),
            "origin: https://app.example.com\r\nsec-fetch-site: cross-site\r\n".into(),
        ),
    ] {
        let answer = exchange(&sluice, "POST", path, &host, &extra);
        assert_eq!(status(&answer), "200", "{extra}: {answer}");
    }
    assert_eq!(mock.received().len(), 3);
}

#[test]
fn allowed_hosts_and_origins_are_checked_and_the_error_names_the_key() {
    let base = "[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:9\"\n[browsers]\n";
    for (setting, key) in [
        (
            "allowed_hosts = [\"ok.example\", \"https://x.example\"]",
            "browsers.allowed_hosts[1]",
        ),
        (
            "allowed_hosts = [\"x.example:4080\"]",
            "browsers.allowed_hosts[0]",
        ),
        (
            "allowed_origins = [\"app.example.com\"]",
            "browsers.allowed_origins[0]",
        ),
        (
            "allowed_origins = [\"https://app.example.com/path\"]",
            "browsers.allowed_origins[0]",
        ),
        ("allowed_origin = []", "allowed_origin"),
    ] {
        let (code, out) = check(&format!("{base}{setting}\n"), &[]);
        assert_eq!(code, 1, "{setting}: {out}");
        assert!(out.contains(key), "{setting}: {out}");
    }
    let (code, out) = check(
        &format!("{base}allowed_hosts = [\"sluice.corp.example\"]\nallowed_origins = [\"https://app.example.com:8443\", \"http://[::1]:3000\"]\n"),
        &[],
    );
    assert_eq!(code, 0, "{out}");
}
