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

/// How much lower than the HTTP workers a background thread runs (the store's writers): nice
/// +5 gives it about a quarter of a core both want (weight 335 against 1024), several times
/// what the writer needs at full load, so it keeps up while a worker that wakes goes first.
pub const BACKGROUND_NICE: i32 = 5;

/// Makes the calling thread background work: `SCHED_BATCH` (it never preempts a thread that
/// wakes, e.g. an HTTP worker with a request to answer) at nice [`BACKGROUND_NICE`]. A batch of
/// thousands of rows is then written in the gaps between requests instead of in one burst that
/// delays every request arriving meanwhile, which matters most when the workers and the writer
/// share a core. Failing to lower a priority is harmless: the thread just runs as before.
pub fn run_as_background() {
    #[cfg(target_os = "linux")]
    // SAFETY: both calls only change the scheduling of the calling thread (its own tid).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(tid as libc::pid_t, libc::SCHED_BATCH, &param);
        libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
    }
}
