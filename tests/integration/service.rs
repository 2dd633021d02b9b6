//! Running under systemd: readiness is announced once sluice listens, and the stop is too.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::support::*;

fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn readiness_and_stop_are_announced_to_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mock = MockUpstream::start();
    let mut sluice = sluice()
        .route("/anthropic", &mock.url(), &[])
        .env("NOTIFY_SOCKET", &path.display().to_string())
        .start();
    let ready = next_message(&socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=listening on {}", sluice.addr)),
        "{ready}"
    );
    sluice.signal("TERM");
    assert_eq!(next_message(&socket).trim_end(), "STOPPING=1");
    assert_eq!(sluice.wait_exit(Duration::from_secs(10)), Some(0));
}
