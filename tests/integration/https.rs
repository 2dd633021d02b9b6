//! The HTTPS listener: HTTP/2 and HTTP/1.1 by ALPN, and a certificate replaced on disk serving
//! new handshakes while open streams carry on.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::test_ca::TestCa;
use crate::support::*;

/// curl against sluice over HTTPS, trusting the test CA: (exit ok, stdout, stderr).
fn curl(sluice: &Sluice, ca: &Path, args: &[&str]) -> (bool, String, String) {
    let url = format!(
        "https://localhost:{}/anthropic/v1/messages",
        sluice.addr.port()
    );
    let output = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("localhost:{}:127.0.0.1", sluice.addr.port()),
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn replace(path: &Path, content: &str) {
    let temp = path.with_extension("new");
    write_secret(&temp, content);
    std::fs::rename(&temp, path).unwrap();
}

#[test]
fn https_speaks_h2_and_http11_and_a_replaced_certificate_serves_new_handshakes() {
    let ca = TestCa::new();
    let (cert, key) = ca.leaf("first");
    let mock = MockUpstream::start();
    let events: Vec<String> = fixture("stream-text.sse")
        .split_inclusive("\n\n")
        .map(str::to_string)
        .collect();
    let gate = Gate::new();
    let (for_mock, gate_for_mock) = (events.clone(), gate.clone());
    mock.reply(move |r| {
        if r.header("x-test-stream").is_some() {
            Reply::GatedEvents(for_mock.clone(), gate_for_mock.clone())
        } else {
            Reply::json(200, &fixture("message.json"))
        }
    });
    let sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"")
        .file("tls.crt", &cert)
        .file("tls.key", &key)
        .file("ca.pem", &ca.pem)
        .start();
    let ca_path = sluice.dir.path().join("ca.pem");

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (ok, out, err) = curl(
            &sluice,
            &ca_path,
            &[
                flag,
                "-H",
                &format!("x-api-key: {CLIENT_API_KEY}"),
                "-d",
                "{}",
                "-w",
                "\n%{http_version} %{http_code}",
            ],
        );
        assert!(ok, "{err}\n{}", sluice.logs());
        assert!(out.ends_with(&format!("\n{version} 200")), "{out}");
        assert!(out.contains("\"usage\""), "{out}");
    }
    let (_, _, verbose) = curl(
        &sluice,
        &ca_path,
        &["-v", "--http2", "-d", "{}", "-o", "/dev/null"],
    );
    assert!(
        verbose.contains("O=first") || verbose.contains("O = first"),
        "{verbose}"
    );

    // A stream opened on the first certificate…
    let port = sluice.addr.port();
    let mut stream = Command::new("curl")
        .args(["-sSN", "--http2", "--cacert"])
        .arg(&ca_path)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", "x-test-stream: 1", "-d", "{}"])
        .arg(format!("https://localhost:{port}/anthropic/v1/messages"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gate.sent() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(gate.sent(), 1, "the stream did not start");

    // …the certificate is replaced on disk: new handshakes get the new one at once.
    let (cert2, key2) = ca.leaf("second");
    replace(&sluice.dir.path().join("tls.key"), &key2);
    replace(&sluice.dir.path().join("tls.crt"), &cert2);
    let start = Instant::now();
    loop {
        let (_, _, verbose) = curl(
            &sluice,
            &ca_path,
            &["-v", "--http2", "-d", "{}", "-o", "/dev/null"],
        );
        if verbose.contains("O=second") || verbose.contains("O = second") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "new handshakes still get the old certificate:\n{verbose}\n{}",
            sluice.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // …and the open stream lives on to its end, every byte intact.
    for _ in 1..events.len() {
        gate.release();
    }
    let mut received = String::new();
    stream
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut received)
        .unwrap();
    assert!(stream.wait().unwrap().success());
    assert_eq!(received, events.concat());
    assert!(!sluice.logs().contains("BEGIN PRIVATE KEY"));
}

#[test]
fn check_names_a_key_that_is_not_the_certificates() {
    let ca = TestCa::new();
    let (cert, _) = ca.leaf("a");
    let (_, other_key) = ca.leaf("b");
    let dir = tempfile::tempdir().unwrap();
    write_secret(&dir.path().join("tls.crt"), &cert);
    write_secret(&dir.path().join("tls.key"), &other_key);
    let text = format!(
        "[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:9\"\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.path().join("tls.crt").display(),
        dir.path().join("tls.key").display()
    );
    let (code, out) = check(&text, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`tls.key_file`") && out.contains("is not the key"),
        "{out}"
    );
}
