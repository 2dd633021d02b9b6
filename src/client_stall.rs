//! A client that stops reading an answer: actix-http stops asking the answer's body for more
//! once the client's socket is full, so nothing inside the body runs again and the upstream
//! stream stays open. `idle_ms` applies to this direction too: a watchdog beside the answer ends
//! the connection when a chunk handed to actix has not been taken for that long.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::connection::ClientSocket;

struct Shared {
    /// Since when a chunk waits for the client (actix has not asked for more since).
    waiting_since: Cell<Option<Instant>>,
    /// The answer still exists, so its connection is open.
    alive: Cell<bool>,
    stalled: Cell<bool>,
    watchdog: Cell<bool>,
}

/// Owned by the answer's body (the usage tap); dropping it retires the watchdog.
pub struct StallWatch {
    shared: Rc<Shared>,
    socket: Option<ClientSocket>,
    idle: Duration,
}

impl StallWatch {
    pub fn new(socket: Option<ClientSocket>, idle: Duration) -> Self {
        Self {
            shared: Rc::new(Shared {
                waiting_since: Cell::new(None),
                alive: Cell::new(true),
                stalled: Cell::new(false),
                watchdog: Cell::new(false),
            }),
            socket,
            idle,
        }
    }

    /// actix asked for more of the answer: the client is taking what it was given.
    pub fn asked(&self) {
        self.shared.waiting_since.set(None);
    }

    /// A chunk went to actix for the client. The watchdog starts with the first chunk that is
    /// not the whole answer (most single-chunk answers never need one).
    pub fn handed_out(&self, more_to_come: bool) {
        self.shared.waiting_since.set(Some(Instant::now()));
        if more_to_come && !self.shared.watchdog.get() {
            if let Some(socket) = self.socket {
                self.shared.watchdog.set(true);
                actix_rt::spawn(watchdog(self.shared.clone(), socket, self.idle));
            }
        }
    }

    /// The watchdog ended the connection because the client stopped reading.
    pub fn stalled(&self) -> bool {
        self.shared.stalled.get()
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.shared.alive.set(false);
    }
}

async fn watchdog(shared: Rc<Shared>, socket: ClientSocket, idle: Duration) {
    loop {
        let deadline = match shared.waiting_since.get() {
            Some(since) => since + idle,
            None => Instant::now() + idle,
        };
        tokio::time::sleep_until(deadline.into()).await;
        if !shared.alive.get() {
            return;
        }
        let stalled = shared
            .waiting_since
            .get()
            .is_some_and(|since| since.elapsed() >= idle);
        if stalled {
            shared.stalled.set(true);
            // SAFETY: `alive` says the answer, and so its connection, still exists; this runs
            // on the connection's own worker thread, so nothing closed it since the check.
            unsafe { socket.shut() };
            return;
        }
    }
}
