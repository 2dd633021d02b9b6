//! One worker's HTTP/2 connections to one upstream, and the streams each one carries. A request
//! takes a stream on a connection that has room under the limit the upstream announced
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`); when every connection is full, another one is opened, up
//! to `pool.max_connections` per worker and route (0 = no limit), and beyond that the request
//! waits for a stream to end. Without this, hyper queues streams over the limit on the one
//! connection, where they wait behind the answers before them.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The connection's side of hyper's HTTP/2 client, as requests send on it.
pub(super) type Sender = hyper::client::conn::http2::SendRequest<super::h2_body::OutgoingBody>;

/// Reads the stream limit the upstream announced on a connection, now (`usize::MAX` before
/// its SETTINGS came); `None` once the connection has ended.
pub(super) type Announced = Box<dyn Fn() -> Option<usize>>;

/// What a connection is expected to carry until its upstream has said otherwise: RFC 9113
/// recommends that servers allow at least 100 concurrent streams.
const EXPECTED_STREAMS: usize = 100;

/// An open connection and the streams it carries now.
pub(super) struct Connection {
    sender: RefCell<Sender>,
    /// What the upstream's SETTINGS announce (`usize::MAX` until they came).
    announced: Announced,
    streams: Cell<usize>,
    /// False once the upstream said it will take no more streams here (GOAWAY).
    open_to_new: Cell<bool>,
    idle_since: Cell<Option<Instant>>,
}

impl Connection {
    /// The upstream's limit, once announced (before that, what RFC 9113 recommends).
    fn limit(&self) -> usize {
        match (self.announced)() {
            None => 0,
            Some(usize::MAX) => EXPECTED_STREAMS,
            Some(announced) => announced,
        }
    }

    fn usable(&self) -> bool {
        self.open_to_new.get() && !self.sender.borrow().is_closed() && (self.announced)().is_some()
    }

    /// No new streams go here; those in flight finish.
    pub(super) fn close_to_new(&self) {
        self.open_to_new.set(false);
    }

    pub(super) fn sender(&self) -> std::cell::RefMut<'_, Sender> {
        self.sender.borrow_mut()
    }
}

/// The connections and who waits for a stream on them.
pub(super) struct Connections {
    open: RefCell<Vec<Rc<Connection>>>,
    /// Connections being opened now, and requests waiting for a stream meanwhile.
    opening: Cell<usize>,
    waiting: Cell<usize>,
    /// The stream limit the upstream last announced: what a connection being opened will bring.
    announced: Cell<usize>,
    /// A stream ended, a connection opened or failed to: waiting requests look again.
    changed: Notify,
    max_connections: usize,
    idle: Duration,
}

/// What a request should do when no connection has room.
pub(super) enum NoRoom {
    /// Open a connection (the caller does, under an `Opening` guard).
    Open,
    /// Wait for `changed`: connections being opened will have room, or the cap is reached.
    Wait,
    /// Wait for `changed`: the cap is reached and no connection is being opened.
    AtCap,
}

impl Connections {
    pub(super) fn new(max_connections: usize, idle: Duration) -> Rc<Self> {
        Rc::new(Self {
            open: RefCell::new(Vec::new()),
            opening: Cell::new(0),
            waiting: Cell::new(0),
            announced: Cell::new(EXPECTED_STREAMS),
            changed: Notify::new(),
            max_connections,
            idle,
        })
    }

    /// A stream on the first connection with room (filling connections in order lets the
    /// extra ones go idle and close), skipping `avoid`.
    pub(super) fn take(self: &Rc<Self>, avoid: Option<&Rc<Connection>>) -> Option<Stream> {
        let mut open = self.open.borrow_mut();
        open.retain(|connection| connection.usable());
        let connection = open.iter().find(|connection| {
            avoid.map_or(true, |avoid| !Rc::ptr_eq(avoid, connection))
                && connection.streams.get() < connection.limit()
        })?;
        Some(Stream::on(self, connection.clone()))
    }

    /// Whether to open another connection or wait, when none has room: a request waits while
    /// the connections being opened will have room for every waiting request (a new connection
    /// also carries the stream of the request that opened it), and when the cap is reached.
    pub(super) fn when_full(&self) -> NoRoom {
        let promised = self
            .opening
            .get()
            .saturating_mul(self.announced.get().saturating_sub(1));
        let connections = self.open.borrow().len() + self.opening.get();
        let below_cap = self.max_connections == 0 || connections < self.max_connections;
        if self.waiting.get() >= promised && below_cap {
            NoRoom::Open
        } else if !below_cap && self.opening.get() == 0 {
            NoRoom::AtCap
        } else {
            NoRoom::Wait
        }
    }

    /// Waits until something changed (a `Notified` enabled before `when_full` was asked).
    pub(super) async fn wait(
        &self,
        changed: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) {
        self.waiting.set(self.waiting.get() + 1);
        let _waiting = Waiting(self);
        changed.await;
    }

    pub(super) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Counts a connection being opened until the guard is dropped.
    pub(super) fn opening(self: &Rc<Self>) -> Opening {
        self.opening.set(self.opening.get() + 1);
        Opening(self.clone())
    }

    /// A newly opened connection joins the pool, with the stream of the request that opened
    /// it (whatever its limit: a request never opens a connection it cannot use).
    pub(super) fn add(self: &Rc<Self>, sender: Sender, announced: Announced) -> Stream {
        if let Some(limit) = announced().filter(|limit| *limit != usize::MAX) {
            self.announced.set(limit);
        }
        let connection = Rc::new(Connection {
            sender: RefCell::new(sender),
            announced,
            streams: Cell::new(0),
            open_to_new: Cell::new(true),
            idle_since: Cell::new(None),
        });
        self.open.borrow_mut().push(connection.clone());
        Stream::on(self, connection)
    }

    /// Closes `connection` once it has been idle for the keep-alive time.
    fn close_when_idle(self: &Rc<Self>, connection: &Rc<Connection>) {
        let (pool, connection) = (Rc::downgrade(self), Rc::downgrade(connection));
        let idle = self.idle;
        actix_rt::spawn(async move {
            tokio::time::sleep(idle).await;
            let (Some(pool), Some(connection)) = (pool.upgrade(), connection.upgrade()) else {
                return;
            };
            let idle_long_enough = connection
                .idle_since
                .get()
                .is_some_and(|since| since.elapsed() >= idle);
            if connection.streams.get() == 0 && idle_long_enough {
                // Dropping the last sender closes the connection.
                pool.open
                    .borrow_mut()
                    .retain(|other| !Rc::ptr_eq(other, &connection));
            }
        });
    }
}

struct Waiting<'a>(&'a Connections);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.set(self.0.waiting.get() - 1);
    }
}

/// A connection being opened; when it is done (or abandoned), waiting requests look again.
pub(super) struct Opening(Rc<Connections>);

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.opening.set(self.0.opening.get() - 1);
        self.0.changed.notify_waiters();
    }
}

/// One stream on a connection, counted until the exchange is over (the answer read or
/// dropped): then the connection has room again.
pub struct Stream {
    pool: Weak<Connections>,
    pub(super) connection: Rc<Connection>,
}

impl Stream {
    fn on(pool: &Rc<Connections>, connection: Rc<Connection>) -> Self {
        connection.streams.set(connection.streams.get() + 1);
        connection.idle_since.set(None);
        Self {
            pool: Rc::downgrade(pool),
            connection,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let left = self.connection.streams.get() - 1;
        self.connection.streams.set(left);
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if left == 0 {
            self.connection.idle_since.set(Some(Instant::now()));
            pool.close_when_idle(&self.connection);
        }
        pool.changed.notify_waiters();
    }
}
