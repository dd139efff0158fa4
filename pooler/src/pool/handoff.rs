//! Handing a released server straight to the longest-waiting client, request included.
//!
//! A client that has to wait for a server has already read its request. When another client
//! releases a server, the releasing task sends that request to the server itself before waking
//! the waiter, so the server starts working at once instead of sitting idle until the
//! waiter's task gets its turn on the runtime (with hundreds of clients queued, that turn can
//! come many microseconds later). The waiter's relay then resumes from where the releaser
//! stopped: the frame walk, the ReadyForQuery count and the bytes already written travel with
//! the server in a [`Prelude`].
//!
//! Ownership of the request is decided under the waiter's [`Parked`] lock, so a waiter that
//! gives up at its checkout timeout and a releaser that picks it never both act on it: either
//! the waiter takes its request back (and the releaser moves on to the next waiter), or the
//! releaser has already sent the grant and the waiter uses the server.

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;

use crate::protocol::scan::{FrontendState, ScanError, Walker};
use crate::server::ServerConnection;

/// Where a transaction stands when its server is handed over: the client's relay resumes from
/// here. The default is a transaction nobody has started.
#[derive(Debug, Default)]
pub struct Prelude {
    /// The walk over the client's buffer (what is left in it was walked up to `scanned`).
    pub walker: Walker,
    /// What the forwarded bytes mean: ReadyForQuery owed, mid-batch, Terminate seen.
    pub front: FrontendState,
    /// Bytes already written to the server on the client's behalf.
    pub written: u64,
    /// The client's request broke the protocol; nothing was sent.
    pub error: Option<ScanError>,
}

/// A waiting client's request, parked where a releasing client can send it.
pub struct Parked(Mutex<ParkedState>);

enum ParkedState {
    /// Still waiting; the request read so far.
    Waiting(BytesMut),
    /// The waiter gave up and took its request back.
    Abandoned,
    /// A releaser took the request and sent the grant.
    Taken,
}

/// What a releaser did with a parked request.
pub enum Handed {
    /// The grant went out: the waiter owns the server now.
    Granted,
    /// The waiter is gone and nothing was sent: the server is as it was.
    Unused(Box<ServerConnection>),
    /// The waiter vanished after its request was written: the server owes an answer nobody
    /// will read, so it must be closed.
    Spoiled(Box<ServerConnection>),
}

/// A server handed to a waiter, with the waiter's request and where the relay stands.
pub struct Handover {
    /// The server.
    pub conn: Box<ServerConnection>,
    /// The waiter's request buffer, minus what was written.
    pub request: BytesMut,
    /// The relay's state.
    pub prelude: Prelude,
}

impl Parked {
    /// Parks `request` (possibly empty: then nothing is sent on the waiter's behalf).
    pub fn new(request: BytesMut) -> Self {
        Parked(Mutex::new(ParkedState::Waiting(request)))
    }

    /// The waiter takes its request back, and no releaser will send it any more. `None` when
    /// a releaser already took it: its grant is then in the waiter's channel.
    pub fn reclaim(&self) -> Option<BytesMut> {
        let mut state = self.0.lock();
        match std::mem::replace(&mut *state, ParkedState::Abandoned) {
            ParkedState::Waiting(request) => Some(request),
            other => {
                *state = other;
                None
            }
        }
    }

    /// Sends the parked request to `conn` (as far as the socket takes it without waiting) and
    /// hands both to the waiter through `grant`. The grant is sent under the lock, so a
    /// waiter that finds its request taken finds the grant in its channel.
    pub fn hand_over(
        &self,
        mut conn: Box<ServerConnection>,
        grant: impl FnOnce(Box<Handover>) -> Result<(), Box<Handover>>,
    ) -> Handed {
        let mut state = self.0.lock();
        let mut request = match std::mem::replace(&mut *state, ParkedState::Taken) {
            ParkedState::Waiting(request) => request,
            other => {
                *state = other;
                return Handed::Unused(conn);
            }
        };
        let prelude = presend(&mut request, &mut conn);
        match grant(Box::new(Handover {
            conn,
            request,
            prelude,
        })) {
            Ok(()) => Handed::Granted,
            Err(back) if back.prelude.written == 0 => Handed::Unused(back.conn),
            Err(back) => Handed::Spoiled(back.conn),
        }
    }
}

/// Walks `request` as the relay would and writes what it can to the server without waiting.
fn presend(request: &mut BytesMut, conn: &mut ServerConnection) -> Prelude {
    let mut prelude = Prelude::default();
    if request.is_empty() {
        return prelude;
    }
    match prelude
        .front
        .walk(&mut prelude.walker, request, &mut conn.state)
    {
        Ok(Some(stop)) => request.truncate(stop),
        Ok(None) => {}
        Err(e) => {
            prelude.error = Some(e);
            return prelude;
        }
    }
    let ready = prelude.walker.scanned;
    if ready > 0
        && let Ok(n) = conn.stream.try_write(&request[..ready])
    {
        request.advance(n);
        prelude.walker.consumed(n);
        prelude.written = n as u64;
    }
    prelude
}
