//! A client connection from accept to close.

pub mod auth;
mod buffers;
pub mod identity;
pub mod idle_wakers;
pub mod limits;
pub mod login;
mod recovery;
pub mod relay;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use pgfleet_crds::PoolMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Shared;
use crate::errors::ClientError;
use crate::protocol::backend::{self, Severity};
use crate::server::ServerConnection;
use idle_wakers::IdleWaker;
pub use login::Port;
use login::Session;
use relay::{READ_CHUNK, Relay, RelayEnd};

/// Serves one client connection until it ends. Never panics on client input; every failure
/// the client can be told about is sent as an ErrorResponse before closing.
pub async fn serve(stream: TcpStream, peer: SocketAddr, port: Port, shared: Arc<Shared>) {
    // Login state is large and short-lived: boxed, so it is freed before the client idles.
    let logged_in = Box::pin(log_in(stream, peer, port, shared)).await;
    if let Some(run) = logged_in.map(after_login) {
        run.await;
    }
}

/// The rest of the session, boxed once: a plain `.await` on it would keep the moved-from
/// stream and session in this task's state as well, doubling an idle client's footprint.
fn after_login(
    (stream, session, server): LoggedIn,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    match (session.mode, server) {
        (PoolMode::Session, Some(server)) => Box::pin(session_mode(stream, session, server)),
        _ => Box::pin(transaction_mode(stream, session)),
    }
}

/// A logged-in client: its socket, session, and (session mode) its server.
type LoggedIn = (TcpStream, Session, Option<Box<ServerConnection>>);

async fn log_in(
    mut stream: TcpStream,
    peer: SocketAddr,
    port: Port,
    shared: Arc<Shared>,
) -> Option<LoggedIn> {
    let _ = stream.set_nodelay(true);
    let mut tenant = None;
    let login = crate::timer::timeout(
        shared.settings.login_timeout,
        login::login(&mut stream, peer, port, &shared, &mut tenant),
    );
    let outcome = login.await;
    match outcome {
        Ok(Ok(Some((session, server)))) => {
            tracing::debug!(%peer, pool = %session.pool.key, "client logged in");
            Some((stream, session, server))
        }
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            tracing::info!(%peer, code = e.code(), error = %e, "login refused");
            shared.errors.record(tenant.as_ref(), e.code());
            if e.is_delayed() {
                crate::timer::sleep(shared.settings.auth_failure_delay).await;
            }
            send_error(&mut stream, &e, Severity::Fatal).await;
            None
        }
        Err(_) => {
            shared
                .errors
                .record(tenant.as_ref(), ClientError::AuthTimeout.code());
            send_error(&mut stream, &ClientError::AuthTimeout, Severity::Fatal).await;
            None
        }
    }
}

/// Counts an error for a logged-in client and sends it as FATAL.
async fn fail_session(stream: &mut TcpStream, session: &Session, error: ClientError) {
    session
        .shared
        .errors
        .record(Some(&session.pool.key.tenant), error.code());
    send_error(stream, &error, Severity::Fatal).await;
}

async fn send_error(stream: &mut TcpStream, error: &ClientError, severity: Severity) {
    let mut out = BytesMut::new();
    error.encode(&mut out, severity);
    if severity == Severity::Error {
        backend::ready_for_query(&mut out, b'I');
    }
    let _ = crate::timer::timeout(Duration::from_secs(5), stream.write_all(&out)).await;
}

/// Transaction mode: the client holds a server only from the first message of a transaction
/// until the server reports idle with nothing owed.
///
/// This loop is what an idle client costs, so it holds only the socket, the session and an
/// empty buffer; rare, large steps (errors, resets) are boxed so their state is not carried.
async fn transaction_mode(mut stream: TcpStream, session: Session) {
    let mut cbuf = BytesMut::new();
    let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
    let mut drain_wake = session.shared.idle_wakers.register(waker);
    loop {
        if cbuf.is_empty() {
            // Idle: hold no buffer (it goes back to this worker's spares), just wait for the
            // socket.
            buffers::give(std::mem::take(&mut cbuf));
            if !wait_for_request(&mut stream, &mut cbuf, &session, &mut drain_wake).await {
                return;
            }
        }
        if cbuf.len() >= 5 && cbuf[0] == b'X' {
            return;
        }
        if !transaction(&mut stream, &mut cbuf, &session).await {
            return;
        }
    }
}

/// What ended a wait between transactions.
enum Woken {
    Readable(std::io::Result<()>),
    IdleTimeout,
    Draining,
}

/// Waits for the next request and reads what has arrived. `false` when the client left, idled
/// out, or the pooler is draining (the client is told `57P01` first).
///
/// Only the socket registers a waker here; a drain wakes the task through `drain_wake`, filed
/// once per connection, so a wait costs no lock and no allocation.
async fn wait_for_request(
    stream: &mut TcpStream,
    cbuf: &mut BytesMut,
    session: &Session,
    drain_wake: &mut IdleWaker<'_>,
) -> bool {
    let mut idle_limit = std::pin::pin!(async {
        match session.idle_timeout {
            Some(limit) => crate::timer::sleep(limit).await,
            None => std::future::pending().await,
        }
    });
    let woken = std::future::poll_fn(|cx| {
        // A request first: the drain and idle checks run only when nothing arrived.
        if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
            return Poll::Ready(Woken::Readable(ready));
        }
        drain_wake.refresh(cx.waker());
        if session.shared.is_draining() {
            return Poll::Ready(Woken::Draining);
        }
        if session.idle_timeout.is_some() && idle_limit.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Woken::IdleTimeout);
        }
        Poll::Pending
    })
    .await;
    match woken {
        Woken::Readable(Ok(())) => {}
        Woken::Readable(Err(_)) => return false,
        Woken::IdleTimeout => {
            let limit = session.idle_timeout.unwrap_or_default().as_millis();
            Box::pin(fail_session(
                stream,
                session,
                ClientError::IdleTimeout(limit),
            ))
            .await;
            return false;
        }
        Woken::Draining => {
            Box::pin(fail_session(stream, session, ClientError::Shutdown)).await;
            return false;
        }
    }
    // The socket is readable, so this returns at once; unlike `try_read_buf`, a short read
    // also clears tokio's cached readiness, sparing the relay a futile read.
    if cbuf.capacity() < READ_CHUNK {
        *cbuf = buffers::take();
    }
    matches!(stream.read_buf(cbuf).await, Ok(n) if n > 0)
}

/// One transaction: check a server out, relay until the transaction ends, release the server.
/// `false` when the session is over.
async fn transaction(stream: &mut TcpStream, cbuf: &mut BytesMut, session: &Session) -> bool {
    let (mut server, prelude) = match session.pool.checkout_for(cbuf).await {
        Ok(granted) => granted,
        Err(e) => {
            tracing::warn!(pool = %session.pool.key, code = e.code(), error = %e, "checkout failed");
            session
                .shared
                .errors
                .record(Some(&session.pool.key.tenant), e.code());
            return Box::pin(recovery::answer_failed_checkout(stream, cbuf, e)).await;
        }
    };
    session.cancel.slot.set(Some(server.cancel));
    let (end, quiescent, to_server, to_client) = {
        let mut relay = Relay::new(stream, cbuf, &mut server, true).resume(prelude);
        let end = relay.run().await;
        (end, relay.quiescent(), relay.to_server, relay.to_client)
    };
    session.cancel.slot.set(None);
    match end {
        RelayEnd::Released => {
            // Release before flushing the tail, so a slow client never holds a server. The
            // tail leaves with the server's buffer: the server takes the client's (empty) read
            // buffer in exchange, so nothing is copied or allocated.
            debug_assert!(cbuf.is_empty());
            std::mem::swap(&mut server.buf, cbuf);
            server.walker = Default::default();
            session.pool.checkin(server, true);
            session
                .pool
                .stats
                .add_bytes(to_server, to_client + cbuf.len() as u64);
            let written = cbuf.is_empty() || stream.write_all(cbuf).await.is_ok();
            cbuf.clear();
            if written && session.shared.is_draining() {
                // Draining: the transaction is done; close at this boundary.
                Box::pin(fail_session(stream, session, ClientError::Shutdown)).await;
                return false;
            }
            written
        }
        // (IdleTimeout and Drained are session mode's; transaction mode handles both between
        // transactions.)
        RelayEnd::Terminated | RelayEnd::ClientGone | RelayEnd::IdleTimeout | RelayEnd::Drained => {
            session.pool.stats.add_bytes(to_server, to_client);
            Box::pin(release_after_client(session, server, quiescent, false)).await;
            false
        }
        RelayEnd::ServerGone(reason) => {
            session.pool.checkin(server, false);
            Box::pin(fail_session(
                stream,
                session,
                ClientError::ServerLost(reason),
            ))
            .await;
            false
        }
        RelayEnd::Protocol(scan) => {
            session.pool.checkin(server, false);
            let e = ClientError::ProtocolViolation(scan.to_string());
            Box::pin(fail_session(stream, session, e)).await;
            false
        }
    }
}

/// Session mode: the client holds its server from login to exit.
async fn session_mode(mut stream: TcpStream, session: Session, mut server: Box<ServerConnection>) {
    let mut cbuf = BytesMut::new();
    session.cancel.slot.set(Some(server.cancel));
    let (end, quiescent, to_server, to_client) = {
        let mut relay = Relay::new(&mut stream, &mut cbuf, &mut server, false)
            .with_idle_timeout(session.idle_timeout)
            .with_drain(session.shared.drained());
        let end = Box::pin(relay.run()).await;
        (end, relay.quiescent(), relay.to_server, relay.to_client)
    };
    session.cancel.slot.set(None);
    session.pool.stats.add_bytes(to_server, to_client);
    let farewell = match end {
        RelayEnd::Terminated | RelayEnd::ClientGone | RelayEnd::Released => None,
        RelayEnd::IdleTimeout => Some(ClientError::IdleTimeout(
            session.idle_timeout.unwrap_or_default().as_millis(),
        )),
        RelayEnd::Drained => Some(ClientError::Shutdown),
        RelayEnd::ServerGone(reason) => {
            session.pool.checkin(server, false);
            fail_session(&mut stream, &session, ClientError::ServerLost(reason)).await;
            return;
        }
        RelayEnd::Protocol(scan) => {
            session.pool.checkin(server, false);
            let e = ClientError::ProtocolViolation(scan.to_string());
            fail_session(&mut stream, &session, e).await;
            return;
        }
    };
    if let Some(e) = farewell {
        fail_session(&mut stream, &session, e).await;
    }
    Box::pin(release_after_client(&session, server, quiescent, true)).await;
}

/// Returns a server whose client left. A server that owes nothing is rolled back if a
/// transaction is open (and reset with `DISCARD ALL` in session mode) before anyone else gets
/// it; a server mid-response is closed, since nothing of one client may reach another.
async fn release_after_client(
    session: &Session,
    mut server: Box<ServerConnection>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, Fut: std::future::Future>(_: impl FnOnce(A, B) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// An idle client is a task parked in `transaction_mode`; its future's size is most of
    /// what an idle client costs, so rare, large states (login, connect, reset) stay boxed.
    #[test]
    fn idle_client_futures_stay_small() {
        let tx = future_size(transaction_mode);
        assert!(tx <= 1152, "transaction_mode future is {tx} bytes");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let stream = TcpStream::connect(addr).await.expect("connect");
            let fut = serve(
                stream,
                addr,
                Port::Pooled,
                Shared::new(crate::Settings::default()),
            );
            let size = std::mem::size_of_val(&fut);
            assert!(size <= 128, "serve future is {size} bytes");
        });
    }
}
