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

/// Makes the calling thread background work: `SCHED_BATCH` (a batch thread that wakes never
/// preempts the running thread, e.g. an HTTP worker answering a request) at nice
/// [`BACKGROUND_NICE`], with a [short time slice](short_time_slice). A batch of thousands of rows
/// is then written in the gaps between requests instead of in one burst that delays every
/// request arriving meanwhile, which matters most when the workers and the writer share a core.
/// Failing to lower a priority is harmless: the thread just runs as before.
pub fn run_as_background() {
    #[cfg(target_os = "linux")]
    // SAFETY: both calls only change the scheduling of the calling thread (its own tid).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(tid as libc::pid_t, libc::SCHED_BATCH, &param);
        libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
    }
    short_time_slice();
}

/// The time slice asked for by [`short_time_slice`].
pub const SHORT_SLICE: std::time::Duration = std::time::Duration::from_micros(100);

/// Asks the kernel for a [`SHORT_SLICE`] for the calling thread, keeping its policy and nice
/// value (`sched_setattr`'s `sched_runtime`, which Linux's EEVDF scheduler takes as the
/// thread's slice since 6.12; older kernels ignore it). The kernel weighs a slice when a thread
/// wakes and at its timer tick (4 ms on a 250 Hz kernel): with short slices a thread that wakes,
/// e.g. a worker with a request to read, is let in sooner; one that is already waiting for the
/// core still waits for the running thread to sleep or for the tick (docs/performance.md, the
/// floor proxy's tail). sluice's HTTP workers, its aggregator and its
/// store writers all ask for it: on one shared core, alone, it took p99 from 5.7–5.9 to
/// 4.8–4.9 ms (sluice started directly, three alternating rounds; docs/performance.md). Failing
/// is harmless: the thread keeps the default slice.
pub fn short_time_slice() {
    #[cfg(target_os = "linux")]
    // SAFETY: reads and changes only the scheduling of the calling thread; `attr` is a fully
    // initialised `sched_attr` whose `size` says which version of the struct it is.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let policy = libc::sched_getscheduler(tid);
        if policy < 0 {
            return;
        }
        let mut attr: libc::sched_attr = std::mem::zeroed();
        attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
        attr.sched_policy = policy as u32;
        attr.sched_nice = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        attr.sched_runtime = SHORT_SLICE.as_nanos() as u64;
        libc::syscall(
            libc::SYS_sched_setattr,
            tid,
            &attr as *const libc::sched_attr,
            0u32,
        );
    }
}
