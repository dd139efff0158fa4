//! Query cancellation through synthetic backend keys.
//!
//! Clients never see a server's real BackendKeyData: a server serves many clients in turn,
//! and a cancel must reach the query of the client that sent it, not whoever holds the
//! server later. Each client gets its own key; a CancelRequest with it is forwarded to the
//! server the client holds at that moment, and does nothing otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::protocol::frontend;
use crate::server::connection::CancelTarget;

/// The server a client currently holds, if any.
#[derive(Default)]
pub struct CancelSlot(Mutex<Option<CancelTarget>>);

impl CancelSlot {
    /// Records the server the client is bound to (or `None` when it releases it).
    pub fn set(&self, target: Option<CancelTarget>) {
        *self.0.lock() = target;
    }
}

/// All clients' keys.
pub struct CancelRegistry {
    next_pid: AtomicU32,
    clients: Mutex<HashMap<u32, (u32, Arc<CancelSlot>)>>,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        CancelRegistry {
            // Start away from small numbers so keys never look like real server pids in logs.
            next_pid: AtomicU32::new(1_000_000 + rand::random::<u32>() % 1_000_000),
            clients: Mutex::new(HashMap::new()),
        }
    }
}

/// A client's registration; unregisters on drop.
pub struct CancelHandle {
    /// Synthetic process id sent in BackendKeyData.
    pub pid: u32,
    /// Synthetic secret.
    pub secret: u32,
    /// Where the client's server is recorded.
    pub slot: Arc<CancelSlot>,
    registry: Arc<CancelRegistry>,
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.clients.lock().remove(&self.pid);
    }
}

impl CancelRegistry {
    /// Registers a new client and returns its key.
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let slot = Arc::new(CancelSlot::default());
        let secret = rand::random::<u32>();
        let mut clients = self.clients.lock();
        let pid = loop {
            let pid = self.next_pid.fetch_add(1, Ordering::Relaxed).max(1);
            if !clients.contains_key(&pid) {
                break pid;
            }
        };
        clients.insert(pid, (secret, Arc::clone(&slot)));
        CancelHandle {
            pid,
            secret,
            slot,
            registry: Arc::clone(self),
        }
    }

    /// The server to cancel for a key, if the key is right and its client holds one.
    pub fn target(&self, pid: u32, secret: u32) -> Option<CancelTarget> {
        let clients = self.clients.lock();
        let (expected, slot) = clients.get(&pid)?;
        // Constant-time enough for a 32-bit comparison: no early exit on the first bad byte.
        if (expected ^ secret) != 0 {
            return None;
        }
        *slot.0.lock()
    }

    /// Forwards a cancel to the server the client holds, if any.
    pub async fn cancel(&self, pid: u32, secret: u32) {
        let Some(target) = self.target(pid, secret) else {
            tracing::debug!(pid, "cancel request for no running query");
            return;
        };
        let mut buf = BytesMut::with_capacity(16);
        frontend::cancel_request(&mut buf, target.pid, target.secret);
        let send = async {
            let mut stream = TcpStream::connect(target.addr).await?;
            stream.write_all(&buf).await?;
            stream.shutdown().await
        };
        match crate::timer::timeout(Duration::from_secs(5), send).await {
            Ok(Ok(())) => tracing::debug!(pid, "cancel forwarded"),
            Ok(Err(e)) => tracing::warn!(pid, error = %e, "cancel forward failed"),
            Err(_) => tracing::warn!(pid, "cancel forward timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reaches_only_its_own_current_server() {
        let registry = Arc::new(CancelRegistry::default());
        let a = registry.register();
        let b = registry.register();
        assert_ne!(a.pid, b.pid);
        assert_eq!(registry.target(a.pid, a.secret), None);
        let server = CancelTarget {
            addr: "127.0.0.1:5432".parse().expect("addr"),
            pid: 42,
            secret: 7,
        };
        a.slot.set(Some(server));
        assert_eq!(registry.target(a.pid, a.secret), Some(server));
        assert_eq!(registry.target(a.pid, a.secret ^ 1), None);
        assert_eq!(registry.target(b.pid, b.secret), None);
        let pid = a.pid;
        drop(a);
        assert_eq!(registry.target(pid, 0), None);
    }
}
