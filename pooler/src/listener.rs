//! Accept loops: one task per connection, bounded by a semaphore, stopped by a token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Shared;
use crate::client::{Port, serve};

/// Accepts connections on `listener` until `shutdown`, serving each on its own task.
/// At most `max_connections` are served at once; further ones wait in the kernel backlog.
pub async fn run(
    listener: TcpListener,
    port: Port,
    shared: Arc<Shared>,
    max_connections: usize,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = Arc::clone(&shared);
                tracker.spawn(async move {
                    serve(stream, peer, port, shared).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                crate::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds a listener, with a clear error naming the address. `shared_port` sets SO_REUSEPORT
/// so each worker thread can listen on the same port.
pub async fn bind(addr: SocketAddr, shared_port: bool) -> std::io::Result<TcpListener> {
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(named)?;
    socket.set_reuseaddr(true).map_err(named)?;
    #[cfg(unix)]
    if shared_port {
        socket.set_reuseport(true).map_err(named)?;
    }
    socket.bind(addr).map_err(named)?;
    socket.listen(4096).map_err(named)
}
