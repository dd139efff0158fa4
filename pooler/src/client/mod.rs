//! A client connection from accept to close.

pub mod auth;
pub mod identity;
pub mod limits;
pub mod login;
mod recovery;
pub mod relay;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgfleet_crds::PoolMode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::Shared;
use crate::errors::ClientError;
use crate::protocol::backend::{self, Severity};
use crate::server::ServerConnection;
pub use login::Port;
use login::Session;
use relay::{READ_CHUNK, Relay, RelayEnd};

/// Serves one client connection until it ends. Never panics on client input; every failure
/// the client can be told about is sent as an ErrorResponse before closing.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, port: Port, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    // Boxed so an idle client's task holds only a pointer's worth of login state.
    let login = Box::pin(tokio::time::timeout(
        shared.settings.login_timeout,
        login::login(&mut stream, peer, port, &shared),
    ));
    let session = match login.await {
        Ok(Ok(Some(session))) => session,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::info!(%peer, code = e.code(), error = %e, "login refused");
            if e.is_delayed() {
                tokio::time::sleep(shared.settings.auth_failure_delay).await;
            }
            send_error(&mut stream, &e, Severity::Fatal).await;
            return;
        }
        Err(_) => {
            send_error(&mut stream, &ClientError::AuthTimeout, Severity::Fatal).await;
            return;
        }
    };
    tracing::debug!(%peer, pool = %session.pool.key, "client logged in");
    match session.mode {
        PoolMode::Transaction => transaction_mode(stream, session).await,
        PoolMode::Session => session_mode(stream, session).await,
    }
}

async fn send_error(stream: &mut TcpStream, error: &ClientError, severity: Severity) {
    let mut out = BytesMut::new();
    error.encode(&mut out, severity);
    if severity == Severity::Error {
        backend::ready_for_query(&mut out, b'I');
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&out)).await;
}

/// Transaction mode: the client holds a server only from the first message of a transaction
/// until the server reports idle with nothing owed.
async fn transaction_mode(mut stream: TcpStream, session: Session) {
    let mut cbuf = BytesMut::new();
    loop {
        if cbuf.is_empty() {
            // Idle: hold no buffer, just wait for the socket.
            cbuf = BytesMut::new();
            let readable = stream.readable();
            let ready = match session.idle_timeout {
                Some(limit) => match tokio::time::timeout(limit, readable).await {
                    Ok(r) => r,
                    Err(_) => {
                        let e = ClientError::IdleTimeout(limit.as_millis());
                        send_error(&mut stream, &e, Severity::Fatal).await;
                        return;
                    }
                },
                None => readable.await,
            };
            if ready.is_err() {
                return;
            }
            cbuf.reserve(READ_CHUNK);
            match stream.try_read_buf(&mut cbuf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
        if cbuf.len() >= 5 && cbuf[0] == b'X' {
            return;
        }
        let mut server = match session.pool.checkout().await {
            Ok(server) => server,
            Err(e) => {
                tracing::warn!(pool = %session.pool.key, code = e.code(), error = %e, "checkout failed");
                match recovery::fail_first_batch(&mut stream, &mut cbuf, &e).await {
                    Ok(true) => continue,
                    Ok(false) => return,
                    Err(fatal) => {
                        send_error(&mut stream, &fatal, Severity::Fatal).await;
                        return;
                    }
                }
            }
        };
        session.cancel.slot.set(Some(server.cancel));
        let (end, quiescent) = {
            let mut relay = Relay::new(&mut stream, &mut cbuf, &mut server, true);
            let end = Box::pin(relay.run()).await;
            (end, relay.quiescent())
        };
        session.cancel.slot.set(None);
        match end {
            RelayEnd::Released => {
                // Release before flushing the tail, so a slow client never holds a server.
                let scanned = server.walker.scanned;
                let tail = server.buf.split_to(scanned);
                server.walker.consumed(scanned);
                shrink(&mut server.buf);
                session.pool.checkin(server, true);
                if !tail.is_empty() && stream.write_all(&tail).await.is_err() {
                    return;
                }
            }
            RelayEnd::Terminated | RelayEnd::ClientGone => {
                release_after_client(&session, server, quiescent, false).await;
                return;
            }
            RelayEnd::ServerGone(reason) => {
                session.pool.checkin(server, false);
                let e = ClientError::ServerLost(reason);
                send_error(&mut stream, &e, Severity::Fatal).await;
                return;
            }
            RelayEnd::Protocol(scan) => {
                session.pool.checkin(server, false);
                let e = ClientError::ProtocolViolation(scan.to_string());
                send_error(&mut stream, &e, Severity::Fatal).await;
                return;
            }
        }
    }
}

/// Session mode: the client holds its server from login to exit.
async fn session_mode(mut stream: TcpStream, mut session: Session) {
    let Some(mut server) = session.server.take() else {
        return;
    };
    let mut cbuf = BytesMut::new();
    session.cancel.slot.set(Some(server.cancel));
    let (end, quiescent) = {
        let mut relay = Relay::new(&mut stream, &mut cbuf, &mut server, false);
        let end = Box::pin(relay.run()).await;
        (end, relay.quiescent())
    };
    session.cancel.slot.set(None);
    match end {
        RelayEnd::Terminated | RelayEnd::ClientGone | RelayEnd::Released => {
            release_after_client(&session, server, quiescent, true).await;
        }
        RelayEnd::ServerGone(reason) => {
            session.pool.checkin(server, false);
            send_error(
                &mut stream,
                &ClientError::ServerLost(reason),
                Severity::Fatal,
            )
            .await;
        }
        RelayEnd::Protocol(scan) => {
            session.pool.checkin(server, false);
            let e = ClientError::ProtocolViolation(scan.to_string());
            send_error(&mut stream, &e, Severity::Fatal).await;
        }
    }
}

/// Returns a server whose client left. A server that owes nothing is rolled back if a
/// transaction is open (and reset with `DISCARD ALL` in session mode) before anyone else gets
/// it; a server mid-response is closed, since nothing of one client may reach another.
async fn release_after_client(
    session: &Session,
    mut server: ServerConnection,
    quiescent: bool,
    discard: bool,
) {
    if !quiescent {
        session.pool.checkin(server, false);
        return;
    }
    server.buf.clear();
    server.walker = Default::default();
    let mut statements = Vec::with_capacity(2);
    if server.state.status != b'I' {
        statements.push("ROLLBACK");
    }
    if discard {
        statements.push("DISCARD ALL");
    }
    if statements.is_empty() {
        session.pool.checkin(server, true);
        return;
    }
    let ok = match server.run_reset(&statements, Duration::from_secs(5)).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(pool = %session.pool.key, error = %e, "server reset failed; closing it");
            false
        }
    };
    server.buf.clear();
    session.pool.checkin(server, ok);
}

/// Keeps an idle server's buffer from pinning a large allocation.
fn shrink(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 4 * READ_CHUNK {
        *buf = BytesMut::new();
    }
}
