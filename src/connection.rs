//! A client connection's end: after a request that asked for `connection: close`, nothing more
//! sent on that connection is processed (RFC 9112 §9.6). actix-http parses pipelined requests
//! ahead and would serve them after the closing one; this stops them before any handler runs.

use std::any::Any;
use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};

use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;

/// Per connection: its socket, and whether a request on it asked for `connection: close`.
pub struct ClientConnection {
    fd: RawFd,
    closing: Cell<bool>,
}

impl ClientConnection {
    /// Shuts the socket's read side. actix-http then sees the end of the input and, since
    /// half-closed connections are not kept, writes out what it has buffered (the closing
    /// request's answer) and closes the connection, dropping the late request unanswered.
    fn stop_reading(&self) {
        // SAFETY: called only while a request of this connection is being handled, so the
        // connection — which owns the descriptor — is open; `shutdown` takes no ownership.
        let _ = unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
    }
}

/// `HttpServer::on_connect`: remembers each plain TCP connection's socket.
pub fn on_connect(connection: &dyn Any, data: &mut Extensions) {
    if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(ClientConnection {
            fd: tcp.as_raw_fd(),
            closing: Cell::new(false),
        });
    }
}

/// Marks a connection closing at a request that asks for it, and stops any request that comes
/// after one on the same connection before it reaches a handler.
pub async fn close_means_close<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let late = match req.conn_data::<ClientConnection>() {
        Some(connection) if connection.closing.get() => {
            connection.stop_reading();
            true
        }
        Some(connection) => {
            if req.head().connection_type() == ConnectionType::Close {
                connection.closing.set(true);
            }
            false
        }
        None => false,
    };
    if late {
        // Never answered: the connection ends (see `stop_reading`) and drops this request.
        std::future::pending::<()>().await;
    }
    next.call(req).await
}

/// A client connection's socket, to end the connection from outside its request (a client
/// that stopped reading an answer). Only [`crate::client_stall`] uses it, and only while the
/// connection's answer is alive.
#[derive(Debug, Clone, Copy)]
pub struct ClientSocket(RawFd);

impl ClientSocket {
    /// The socket of the connection `req` came on (plain TCP only).
    pub fn of(req: &actix_web::HttpRequest) -> Option<Self> {
        req.conn_data::<ClientConnection>()
            .map(|connection| Self(connection.fd))
    }

    /// Shuts the connection both ways: actix-http's next write fails and it drops the
    /// connection, and with it the answer and its upstream request.
    ///
    /// # Safety
    /// The connection must still be open — its answer not yet dropped — or the descriptor may
    /// already belong to another connection.
    pub unsafe fn shut(self) {
        let _ = libc::shutdown(self.0, libc::SHUT_RDWR);
    }
}
