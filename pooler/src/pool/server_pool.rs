//! One pool: idle connections (LIFO, warm ones first), a FIFO queue of waiting clients, and a
//! size that reloads change in place.
//!
//! The lock is never held across I/O. A waiting client is handed either a connection or a
//! permit to open one, so a slot freed by a closed connection is never lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::PoolKey;
use super::handoff::{Handed, Handover, Parked, Prelude};
use crate::errors::ClientError;
use crate::server::{ConnectTarget, ServerConnection, UpstreamCredentials, connect};

/// Settings a reload may change.
#[derive(Clone)]
pub struct PoolConfig {
    /// Upstream host.
    pub host: Arc<str>,
    /// Upstream port.
    pub port: u16,
    /// Maximum server connections.
    pub size: u32,
    /// How long a client waits for a connection.
    pub checkout_timeout: Duration,
    /// How to log in upstream.
    pub credentials: Arc<UpstreamCredentials>,
}

impl PoolConfig {
    /// True when connections made under `self` cannot serve under `other`.
    fn upstream_differs(&self, other: &PoolConfig) -> bool {
        self.host != other.host
            || self.port != other.port
            || !Arc::ptr_eq(&self.credentials, &other.credentials)
    }
}

/// ParameterStatus name/value pairs a server reported at login.
pub type ServerParameters = Arc<Vec<(String, String)>>;

enum Grant {
    /// A server, with the waiter's request already (partly) sent on it.
    Conn(Box<Handover>),
    /// Room to open a new server.
    Permit,
}

/// A client waiting for a server, with the request it has read.
struct Waiter {
    grant: oneshot::Sender<Grant>,
    parked: Arc<Parked>,
}

struct Inner {
    // Boxed although the Vec is on the heap: a connection moves out and back in on every
    // transaction, and a box moves as a pointer.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<ServerConnection>>,
    /// Open plus opening connections.
    total: u32,
    waiters: VecDeque<Waiter>,
    config: PoolConfig,
    generation: u64,
    retired: bool,
}

/// One pool of server connections.
pub struct Pool {
    /// The key clients share.
    pub key: PoolKey,
    inner: Mutex<Inner>,
    /// ParameterStatus values of the latest server login, sent to clients at their login so
    /// they need not wait for a server.
    parameters: Mutex<Option<ServerParameters>>,
    /// Clients attached to this pool (session-mode cap, status).
    pub clients: AtomicU32,
    /// Transactions (transaction mode) or sessions (session mode) served.
    pub checkouts: AtomicU64,
    /// Traffic and waiting, for metrics.
    pub stats: PoolStats,
}

/// Counters a pool keeps for metrics; updated once per transaction, never per message.
#[derive(Default, Debug)]
pub struct PoolStats {
    /// Bytes clients sent to servers.
    pub bytes_from_clients: AtomicU64,
    /// Bytes servers sent to clients.
    pub bytes_to_clients: AtomicU64,
    /// Checkouts that had to wait for a server.
    pub waits: AtomicU64,
    /// Total time those waits took, in microseconds.
    pub wait_micros: AtomicU64,
}

impl PoolStats {
    /// Adds one transaction's traffic.
    pub fn add_bytes(&self, from_client: u64, to_client: u64) {
        self.bytes_from_clients
            .fetch_add(from_client, Ordering::Relaxed);
        self.bytes_to_clients
            .fetch_add(to_client, Ordering::Relaxed);
    }
}

enum Next {
    Connect(PoolConfig, u64),
    Wait(oneshot::Receiver<Grant>, Arc<Parked>),
}

impl Pool {
    /// A new, empty pool.
    pub fn new(key: PoolKey, config: PoolConfig) -> Self {
        Pool {
            key,
            inner: Mutex::new(Inner {
                idle: Vec::new(),
                total: 0,
                waiters: VecDeque::new(),
                config,
                generation: 1,
                retired: false,
            }),
            parameters: Mutex::new(None),
            clients: AtomicU32::new(0),
            checkouts: AtomicU64::new(0),
            stats: PoolStats::default(),
        }
    }

    /// The current settings.
    pub fn config(&self) -> PoolConfig {
        self.inner.lock().config.clone()
    }

    /// Cached ParameterStatus values, if a server has logged in.
    pub fn parameters(&self) -> Option<ServerParameters> {
        self.parameters.lock().clone()
    }

    /// (open or opening, idle, waiting) counts.
    pub fn counts(&self) -> (u32, usize, usize) {
        let inner = self.inner.lock();
        (inner.total, inner.idle.len(), inner.waiters.len())
    }

    /// Takes a server connection, waiting in FIFO order up to the checkout timeout.
    pub async fn checkout(&self) -> Result<Box<ServerConnection>, ClientError> {
        let (conn, _) = self.checkout_for(&mut BytesMut::new()).await?;
        Ok(conn)
    }

    /// Takes a server connection for the client request in `request`, waiting in FIFO order
    /// up to the checkout timeout. A client that waits parks its request, so that whoever
    /// releases a server can send it at once; the returned [`Prelude`] says how far that got
    /// (the default when the server came from the idle stack or a new connection).
    pub async fn checkout_for(
        &self,
        request: &mut BytesMut,
    ) -> Result<(Box<ServerConnection>, Prelude), ClientError> {
        let mut deadline = None;
        loop {
            let mut stale = Vec::new();
            let next = {
                let mut inner = self.inner.lock();
                let mut found = None;
                let here = crate::worker::current();
                while !inner.idle.is_empty() {
                    // Newest first (warm), preferring one opened on this worker's reactor.
                    let at = inner
                        .idle
                        .iter()
                        .rposition(|c| c.home == here)
                        .unwrap_or(inner.idle.len() - 1);
                    let conn = inner.idle.remove(at);
                    // The probe costs no syscall unless the server sent something (a FATAL before
                    // closing, say), which tokio's readiness tracking already knows.
                    if conn.generation != inner.generation || !conn.looks_alive() {
                        inner.total -= 1;
                        stale.push(conn);
                        continue;
                    }
                    found = Some(conn);
                    break;
                }
                match found {
                    Some(conn) => {
                        drop(inner);
                        close_all(stale);
                        self.checkouts.fetch_add(1, Ordering::Relaxed);
                        return Ok((conn, Prelude::default()));
                    }
                    None if inner.total < inner.config.size => {
                        inner.total += 1;
                        Next::Connect(inner.config.clone(), inner.generation)
                    }
                    None => {
                        let (tx, rx) = oneshot::channel();
                        let parked = Arc::new(Parked::new(std::mem::take(request)));
                        inner.waiters.push_back(Waiter {
                            grant: tx,
                            parked: parked.clone(),
                        });
                        Next::Wait(rx, parked)
                    }
                }
            };
            close_all(stale);
            match next {
                // Boxed: a login's state is large and rare, and would otherwise sit inside every
                // idle client's future.
                Next::Connect(config, generation) => {
                    let conn = Box::pin(self.open(config, generation)).await?;
                    return Ok((conn, Prelude::default()));
                }
                Next::Wait(mut rx, parked) => {
                    // Timed from the first wait, so waking for a lost race does not extend it.
                    let started = tokio::time::Instant::now();
                    let deadline =
                        *deadline.get_or_insert_with(|| started + self.config().checkout_timeout);
                    let granted = crate::timer::timeout_at(deadline, &mut rx).await;
                    self.stats.waits.fetch_add(1, Ordering::Relaxed);
                    let waited = started.elapsed().as_micros() as u64;
                    self.stats.wait_micros.fetch_add(waited, Ordering::Relaxed);
                    let granted = match granted {
                        Ok(granted) => granted.map_err(drop),
                        Err(_) => {
                            // Timed out. A releaser may have taken the request a moment ago: its
                            // grant is then in the channel and the server may already be
                            // working on the request, so it is used rather than given back.
                            match parked.reclaim() {
                                None => rx.try_recv().map_err(drop),
                                Some(back) => {
                                    *request = back;
                                    rx.close();
                                    if let Ok(Grant::Permit) = rx.try_recv() {
                                        self.slot_freed();
                                    }
                                    let config = self.config();
                                    return Err(ClientError::CheckoutTimeout {
                                        ms: config.checkout_timeout.as_millis(),
                                        mode: match self.key.mode {
                                            pgfleet_crds::PoolMode::Transaction => "Transaction",
                                            pgfleet_crds::PoolMode::Session => "Session",
                                        },
                                    });
                                }
                            }
                        }
                    };
                    match granted {
                        Ok(Grant::Conn(handover)) => {
                            let Handover {
                                conn,
                                request: back,
                                prelude,
                            } = *handover;
                            *request = back;
                            self.checkouts.fetch_add(1, Ordering::Relaxed);
                            return Ok((conn, prelude));
                        }
                        Ok(Grant::Permit) => {
                            if let Some(back) = parked.reclaim() {
                                *request = back;
                            }
                            let (config, generation) = {
                                let inner = self.inner.lock();
                                (inner.config.clone(), inner.generation)
                            };
                            let conn = Box::pin(self.open(config, generation)).await?;
                            return Ok((conn, Prelude::default()));
                        }
                        // Our sender was dropped without a grant: ask again.
                        Err(_) => {
                            if let Some(back) = parked.reclaim() {
                                *request = back;
                            }
                            continue;
                        }
                    }
                }
            }
        }
    }

    /// Opens a connection for a slot already counted in `total`.
    async fn open(
        &self,
        config: PoolConfig,
        generation: u64,
    ) -> Result<Box<ServerConnection>, ClientError> {
        let target = ConnectTarget {
            host: &config.host,
            port: config.port,
            user: &self.key.user,
            database: &self.key.database,
            search_path: self.key.search_path.as_deref(),
            application_name: "pgfleet",
            credentials: &config.credentials,
            generation,
        };
        match connect(&target).await {
            Ok((conn, info)) => {
                *self.parameters.lock() = Some(Arc::new(info.parameters));
                self.checkouts.fetch_add(1, Ordering::Relaxed);
                Ok(conn)
            }
            Err(e) => {
                tracing::warn!(pool = %self.key, error = %e, "server connection failed");
                self.slot_freed();
                Err(e.into())
            }
        }
    }

    /// Returns a connection. `clean` says it is idle with nothing pending; anything else, a
    /// connection of an old generation, or one above the pool size, is closed instead.
    pub fn checkin(&self, mut conn: Box<ServerConnection>, clean: bool) {
        let mut inner = self.inner.lock();
        let orphaned = inner.retired && self.clients.load(Ordering::Acquire) == 0;
        if !clean
            || orphaned
            || conn.generation != inner.generation
            || inner.total > inner.config.size
        {
            inner.total -= 1;
            Self::grant_permit(&mut inner);
            drop(inner);
            close(conn);
            return;
        }
        conn.reset_accounting();
        if inner.waiters.is_empty() {
            inner.idle.push(conn);
            return;
        }
        // Hand it to the longest-waiting client still waiting, sending its request on the way.
        let mut conn = conn;
        loop {
            let Some(waiter) = inner.waiters.pop_front() else {
                inner.idle.push(conn);
                return;
            };
            // The write to the server happens outside the pool's lock; the connection is in
            // neither the idle stack nor anyone's hands meanwhile, so nobody else sees it.
            drop(inner);
            let Waiter { grant, parked } = waiter;
            let handed = parked.hand_over(conn, |handover| {
                match grant.send(Grant::Conn(handover)) {
                    Ok(()) => Ok(()),
                    Err(Grant::Conn(unsent)) => Err(unsent),
                    // A failed send returns what was sent: a connection, never a permit.
                    Err(Grant::Permit) => Ok(()),
                }
            });
            inner = self.inner.lock();
            match handed {
                Handed::Granted => return,
                Handed::Unused(back) => conn = back,
                Handed::Spoiled(back) => {
                    inner.total -= 1;
                    Self::grant_permit(&mut inner);
                    drop(inner);
                    close(back);
                    return;
                }
            }
        }
    }

    /// A counted slot was given up (failed connect, or a waiter's permit came back).
    fn slot_freed(&self) {
        let mut inner = self.inner.lock();
        inner.total -= 1;
        Self::grant_permit(&mut inner);
    }

    /// While there is room, lets the longest-waiting live client open a connection.
    fn grant_permit(inner: &mut Inner) {
        while inner.total < inner.config.size {
            let Some(waiter) = inner.waiters.pop_front() else {
                break;
            };
            inner.total += 1;
            if waiter.grant.send(Grant::Permit).is_err() {
                inner.total -= 1;
            }
        }
    }

    /// Applies reloaded settings: a new size takes effect at once (growing hands permits to
    /// waiters, shrinking closes idle connections now and busy ones as they come back); a new
    /// upstream or credentials starts a new generation.
    pub fn reconfigure(&self, config: PoolConfig) {
        let mut closing = Vec::new();
        {
            let mut inner = self.inner.lock();
            if inner.config.upstream_differs(&config) {
                inner.generation += 1;
                inner.total -= inner.idle.len() as u32;
                closing.append(&mut inner.idle);
                *self.parameters.lock() = None;
            }
            inner.config = config;
            while inner.total > inner.config.size {
                let Some(conn) = inner.idle.pop() else { break };
                inner.total -= 1;
                closing.push(conn);
            }
            Self::grant_permit(&mut inner);
        }
        close_all(closing);
    }

    /// Stops taking new clients (the registry no longer hands this pool out). Clients already
    /// attached keep being served; the connections close when the last of them leaves.
    pub fn retire(&self) {
        self.inner.lock().retired = true;
        self.close_idle_if_orphaned();
    }

    /// A client starts using this pool.
    pub fn attach(&self) -> u32 {
        self.clients.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// A client stopped using this pool.
    pub fn detach(&self) {
        if self.clients.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close_idle_if_orphaned();
        }
    }

    fn close_idle_if_orphaned(&self) {
        let closing = {
            let mut inner = self.inner.lock();
            if !inner.retired || self.clients.load(Ordering::Acquire) > 0 {
                return;
            }
            inner.total -= inner.idle.len() as u32;
            std::mem::take(&mut inner.idle)
        };
        close_all(closing);
    }

    /// True once retired.
    pub fn is_retired(&self) -> bool {
        self.inner.lock().retired
    }
}

#[allow(clippy::vec_box)]
fn close_all(conns: Vec<Box<ServerConnection>>) {
    for conn in conns {
        close(conn);
    }
}

/// Says goodbye politely (so the server logs no "unexpected EOF") without blocking the caller.
fn close(mut conn: Box<ServerConnection>) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let mut bye = bytes::BytesMut::new();
            crate::protocol::frontend::terminate(&mut bye);
            let _ =
                crate::timer::timeout(Duration::from_secs(1), conn.stream.write_all(&bye)).await;
        });
    }
}
