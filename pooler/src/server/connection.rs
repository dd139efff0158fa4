//! One logged-in upstream connection and what the relay tracks about it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::protocol::MAX_SERVER_LOGIN_MESSAGE;
use crate::protocol::backend::error_field;
use crate::protocol::frontend;
use crate::protocol::read::{ReadError, read_message};
use crate::protocol::scan::{BackendState, Walker};

/// Where to send a CancelRequest for this server's current query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CancelTarget {
    /// The server's address.
    pub addr: SocketAddr,
    /// Its backend process id.
    pub pid: u32,
    /// Its cancel secret.
    pub secret: u32,
}

/// A logged-in server connection.
pub struct ServerConnection {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read from the server not yet forwarded to a client.
    pub buf: BytesMut,
    /// Frame boundaries in `buf`.
    pub walker: Walker,
    /// ReadyForQuery accounting for the current transaction.
    pub state: BackendState,
    /// Where cancels for this server go.
    pub cancel: CancelTarget,
    /// The pool generation it was made under; a connection of an older generation is closed
    /// when released (its upstream or credentials changed).
    pub generation: u64,
    /// The worker thread whose reactor the socket is registered with.
    pub home: usize,
}

/// A reset query failed or the server misbehaved.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The socket failed or closed.
    #[error("server i/o: {0}")]
    Io(#[from] ReadError),
    /// The server answered with an error.
    #[error("server error {0}")]
    Server(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
}

impl From<std::io::Error> for ResetError {
    fn from(e: std::io::Error) -> Self {
        ResetError::Io(ReadError::Io(e))
    }
}

impl ServerConnection {
    /// Runs simple queries and waits for all their ReadyForQuery; the server must end idle.
    /// Used for `DISCARD ALL` and `ROLLBACK` between clients, never on the hot path.
    pub async fn run_reset(
        &mut self,
        statements: &[&str],
        timeout: Duration,
    ) -> Result<(), ResetError> {
        let mut out = BytesMut::new();
        for sql in statements {
            frontend::query(&mut out, sql);
        }
        let work = async {
            self.stream.write_all(&out).await?;
            let mut pending = statements.len();
            let mut failure = None;
            let mut status = b'I';
            while pending > 0 {
                let msg =
                    read_message(&mut self.stream, &mut self.buf, MAX_SERVER_LOGIN_MESSAGE).await?;
                match msg.tag {
                    b'E' => failure = error_field(&msg.body, b'M'),
                    b'Z' => {
                        pending -= 1;
                        status = msg.body.first().copied().unwrap_or(b'?');
                    }
                    _ => {}
                }
            }
            match (failure, status) {
                (None, b'I') => Ok(()),
                (Some(m), _) => Err(ResetError::Server(m)),
                (None, s) => Err(ResetError::Server(format!(
                    "status {:?} after reset",
                    s as char
                ))),
            }
        };
        crate::timer::timeout(timeout, work)
            .await
            .map_err(|_| ResetError::Timeout)?
    }

    /// A cheap check that an idle connection is still usable: the server has not closed it
    /// and has sent nothing unasked (such as a FATAL before terminating).
    pub fn looks_alive(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Readies the connection for a new transaction's accounting.
    pub fn reset_accounting(&mut self) {
        self.state = BackendState::default();
    }

    /// True when nothing is pending: every owed ReadyForQuery arrived, the last said idle, and
    /// no bytes are buffered. Only such a connection can serve another client as is.
    pub fn is_clean(&self, expected_ready: usize) -> bool {
        self.state.ready_seen >= expected_ready
            && self.state.status == b'I'
            && self.buf.is_empty()
            && self.walker.between_frames()
    }
}
