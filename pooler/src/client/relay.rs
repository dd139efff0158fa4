//! The hot path: bytes between a client and the server it holds, in both directions at once.
//!
//! One task drives both sockets with non-blocking reads and writes (no channel, no copy: the
//! bytes read are the bytes written). Each direction buffers at most [`MAX_IN_FLIGHT`] bytes,
//! so a slow reader on one side slows the writer on the other instead of growing memory.
//! Frame headers are walked as they pass to count the ReadyForQuery the server owes.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use crate::pool::Prelude;
use crate::protocol::scan::{FrontendState, ScanError, Walker};
use crate::server::ServerConnection;

/// Bytes a direction may hold before it stops reading.
pub const MAX_IN_FLIGHT: usize = 128 * 1024;
/// Room made before each read.
pub const READ_CHUNK: usize = 16 * 1024;

/// Reads are skipped into buffers with less spare room than this; they grow first.
const MIN_READ_ROOM: usize = 2 * 1024;

/// Makes room for a read only when little is left. Reserving unconditionally would grow the
/// buffer on every read, and each growth copies the whole old allocation.
pub fn ensure_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_READ_ROOM {
        buf.reserve(READ_CHUNK);
    }
}

/// Why the relay stopped.
#[derive(Debug)]
pub enum RelayEnd {
    /// Transaction mode: everything the client sent is answered and the server is idle; the
    /// server's last bytes are still in its buffer for the caller to flush after release.
    Released,
    /// The client sent Terminate.
    Terminated,
    /// The client's socket closed or failed.
    ClientGone,
    /// The server's socket closed or failed.
    ServerGone(String),
    /// The client sent something that is not the protocol.
    Protocol(ScanError),
    /// Session mode: the client sat idle outside a transaction past its idle timeout.
    IdleTimeout,
    /// Session mode: the pooler is draining and the session reached an idle moment.
    Drained,
}

/// The sockets that answered Pending during one [`Relay::poll`] call.
#[derive(Default)]
struct Pending {
    client_read: bool,
    server_write: bool,
    server_read: bool,
    client_write: bool,
}

/// One bound stretch: a client and the server it holds.
pub struct Relay<'a> {
    client: &'a mut TcpStream,
    cbuf: &'a mut BytesMut,
    server: &'a mut ServerConnection,
    cwalk: Walker,
    front: FrontendState,
    release_when_idle: bool,
    /// Session mode: how long the client may sit idle outside a transaction.
    idle_timeout: Option<std::time::Duration>,
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The client's request broke the protocol before the relay started (see [`Prelude`]).
    early_error: Option<ScanError>,
    /// Session mode: the pooler is draining; end the session at the next idle moment.
    drain: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    /// Bytes written to the server (metrics).
    pub to_server: u64,
    /// Bytes written to the client (metrics).
    pub to_client: u64,
}

impl<'a> Relay<'a> {
    /// Binds `client` (with bytes already read in `cbuf`) to `server`.
    pub fn new(
        client: &'a mut TcpStream,
        cbuf: &'a mut BytesMut,
        server: &'a mut ServerConnection,
        release_when_idle: bool,
    ) -> Self {
        Relay {
            client,
            cbuf,
            server,
            cwalk: Walker::default(),
            front: FrontendState::default(),
            release_when_idle,
            idle_timeout: None,
            idle_timer: None,
            early_error: None,
            drain: None,
            to_server: 0,
            to_client: 0,
        }
    }

    /// Resumes a transaction a releasing client started on this client's behalf: part of
    /// `cbuf` may already be walked and written (see [`crate::pool::handoff`]).
    pub fn resume(mut self, prelude: Prelude) -> Self {
        self.cwalk = prelude.walker;
        self.front = prelude.front;
        self.to_server = prelude.written;
        self.early_error = prelude.error;
        self
    }

    /// Ends a session-mode relay at the first idle moment after `drain` completes.
    pub fn with_drain(mut self, drain: tokio_util::sync::WaitForCancellationFutureOwned) -> Self {
        self.drain = Some(Box::pin(drain));
        self
    }

    /// Ends a session-mode relay after `timeout` idle outside a transaction.
    pub fn with_idle_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Runs until the transaction ends (transaction mode) or either side leaves.
    pub async fn run(&mut self) -> RelayEnd {
        if let Some(e) = self.early_error.take() {
            return RelayEnd::Protocol(e);
        }
        if let Err(e) = self.walk_client() {
            return RelayEnd::Protocol(e);
        }
        poll_fn(|cx| self.poll(cx)).await
    }

    /// True when the server owes nothing and holds no transaction for this client: it can be
    /// released as it is (status `I`) or after a ROLLBACK (status `T` or `E`).
    pub fn quiescent(&self) -> bool {
        self.cbuf.is_empty()
            && self.cwalk.between_frames()
            && !self.front.unsynced
            && self.server.state.ready_seen >= self.front.expected_ready
            && self.server.walker.between_frames()
            && self.server.walker.scanned == self.server.buf.len()
    }

    fn walk_client(&mut self) -> Result<(), ScanError> {
        if let Some(stop) = self
            .front
            .walk(&mut self.cwalk, self.cbuf, &mut self.server.state)?
        {
            // Terminate is never forwarded: what the server does next is the pooler's call.
            self.cbuf.truncate(stop);
        }
        Ok(())
    }

    fn releasable(&self) -> bool {
        self.release_when_idle && self.server.state.status == b'I' && self.quiescent()
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        // A socket that said Pending during this call has our waker and stays Pending until
        // the reactor runs, which is not before this call returns (or, on a multi-threaded
        // runtime, it wakes us again): polling it once more would only retake tokio's lock.
        let mut pending = Pending::default();
        loop {
            let mut progress = false;

            if !pending.client_read && !self.front.terminated && self.cbuf.len() < MAX_IN_FLIGHT {
                ensure_room(self.cbuf);
                match poll_read_buf(Pin::new(&mut *self.client), cx, self.cbuf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(RelayEnd::ClientGone);
                    }
                    Poll::Ready(Ok(_)) => {
                        if let Err(e) = self.walk_client() {
                            return Poll::Ready(RelayEnd::Protocol(e));
                        }
                        progress = true;
                    }
                    Poll::Pending => pending.client_read = true,
                }
            }

            if !pending.server_write && self.cwalk.scanned > 0 {
                match Pin::new(&mut self.server.stream)
                    .poll_write(cx, &self.cbuf[..self.cwalk.scanned])
                {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(RelayEnd::ServerGone("server stopped reading".into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.cbuf.advance(n);
                        self.cwalk.consumed(n);
                        self.to_server += n as u64;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ServerGone(e.to_string())),
                    Poll::Pending => pending.server_write = true,
                }
            }

            if !pending.server_read && self.server.buf.len() < MAX_IN_FLIGHT {
                ensure_room(&mut self.server.buf);
                match poll_read_buf(Pin::new(&mut self.server.stream), cx, &mut self.server.buf) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(RelayEnd::ServerGone(
                            "server closed the connection".into(),
                        ));
                    }
                    Poll::Ready(Ok(_)) => {
                        let server = &mut *self.server;
                        if let Err(e) = server.state.walk(&mut server.walker, &server.buf) {
                            return Poll::Ready(RelayEnd::ServerGone(format!(
                                "bad server message: {e}"
                            )));
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ServerGone(e.to_string())),
                    Poll::Pending => pending.server_read = true,
                }
            }

            if self.releasable() {
                return Poll::Ready(RelayEnd::Released);
            }

            if !pending.client_write && self.server.walker.scanned > 0 {
                let scanned = self.server.walker.scanned;
                match Pin::new(&mut *self.client).poll_write(cx, &self.server.buf[..scanned]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(RelayEnd::ClientGone);
                    }
                    Poll::Ready(Ok(n)) => {
                        self.server.buf.advance(n);
                        self.server.walker.consumed(n);
                        self.to_client += n as u64;
                        progress = true;
                    }
                    Poll::Pending => pending.client_write = true,
                }
            }

            if self.releasable() {
                return Poll::Ready(RelayEnd::Released);
            }
            if self.front.terminated && self.cbuf.is_empty() {
                return Poll::Ready(RelayEnd::Terminated);
            }
            if progress {
                // (Checked first: dropping even an empty Option is an out-of-line call, and
                // this runs several times per transaction.)
                if self.idle_timer.is_some() {
                    self.idle_timer = None;
                }
                continue;
            }
            let idle = self.server.state.status == b'I' && self.quiescent();
            if idle
                && let Some(drain) = self.drain.as_mut()
                && drain.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(RelayEnd::Drained);
            }
            if let Some(limit) = self.idle_timeout
                && idle
            {
                let timer = self
                    .idle_timer
                    .get_or_insert_with(|| Box::pin(crate::timer::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(RelayEnd::IdleTimeout);
                }
            }
            return Poll::Pending;
        }
    }
}
