//! Running under a service manager: tells systemd (`Type=notify`) when sluice is ready to take
//! requests and when it stops. Without `NOTIFY_SOCKET` (not under systemd) these do nothing.

use sd_notify::NotifyState;

/// The listening sockets are bound: systemd may now order dependents after sluice.
pub fn ready(listening: &str) {
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("listening on {listening}")),
    ]);
}

/// A stop signal arrived: requests in flight are finishing.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify the service manager: {err}");
    }
}
