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

/// sluice serving HTTPS with a certificate `ca` signed, in front of `mock`.
fn https_sluice(ca: &TestCa, mock: &MockUpstream) -> Sluice {
    let (cert, key) = ca.leaf("sluice");
    sluice()
        .route("/anthropic", &mock.url(), &[])
        .toml("[tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"")
        .file("tls.crt", &cert)
        .file("tls.key", &key)
        .file("ca.pem", &ca.pem)
        .start()
}

#[test]
fn idle_connections_that_never_send_a_client_hello_do_not_keep_real_clients_out() {
    let ca = TestCa::new();
    let mock = MockUpstream::start();
    let sluice = https_sluice(&ca, &mock);
    let ca_path = sluice.dir.path().join("ca.pem");
    // More idle connections than a worker has handshake slots in actix's own acceptor (256).
    let idle: Vec<std::net::TcpStream> = (0..700)
        .map(|_| std::net::TcpStream::connect(sluice.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (ok, out, err) = curl(
        &sluice,
        &ca_path,
        &["--max-time", "4", "-d", "{}", "-w", "\n%{http_code}"],
    );
    let took = started.elapsed();
    assert!(
        ok && out.ends_with("\n200"),
        "{out}\n{err}\n{}",
        sluice.logs()
    );
    assert!(
        took < Duration::from_millis(1500),
        "a real request waited {took:?} behind {} idle connections",
        idle.len()
    );
    drop(idle);
}

/// The server's SETTINGS as an HTTP/2 client over TLS sees them: (identifier, value) pairs.
async fn server_h2_settings(sluice: &Sluice, ca_pem: &str) -> Vec<(u16, u32)> {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(sluice.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    loop {
        let mut head = [0u8; 9];
        tls.read_exact(&mut head).await.unwrap();
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; length];
        tls.read_exact(&mut payload).await.unwrap();
        if head[3] == 0x4 && head[4] & 0x1 == 0 {
            return payload
                .chunks(6)
                .map(|s| {
                    (
                        u16::from_be_bytes([s[0], s[1]]),
                        u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                    )
                })
                .collect();
        }
    }
}

#[actix_rt::test]
async fn http2_clients_are_told_at_most_100_streams_per_connection() {
    let ca = TestCa::new();
    let mock = MockUpstream::start();
    let sluice = https_sluice(&ca, &mock);
    let settings = server_h2_settings(&sluice, &ca.pem).await;
    let max_streams = settings.iter().rev().find(|(id, _)| *id == 0x3);
    assert_eq!(max_streams, Some(&(0x3, 100)), "{settings:?}");
}
