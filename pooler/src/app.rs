//! The pooler as a whole: listeners, tenant source and shutdown, for `main` and for tests.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::Port;
use crate::tenants::directory::DirectorySource;
use crate::tenants::kubernetes::{KubernetesSource, KubernetesSourceConfig, KubernetesSourceError};
use crate::{Settings, Shared, admin, listener, tenants};

/// Where tenant documents come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantSourceConfig {
    /// A directory of files, watched and re-read on SIGHUP; loaded before the ports accept.
    Directory(PathBuf),
    /// The fleet's tenant-document Secrets, listed and watched through the API server. The
    /// ports accept at once; `/readyz` fails until the first list is in.
    Kubernetes(KubernetesSourceConfig),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct PoolerConfig {
    /// Where tenant documents come from.
    pub tenant_source: TenantSourceConfig,
    /// Listen address.
    pub listen: IpAddr,
    /// Session-mode port (0 picks a free one).
    pub session_port: u16,
    /// Pooled port (0 picks a free one).
    pub pooled_port: u16,
    /// Connections served at once per port.
    pub max_connections: usize,
    /// Per-connection settings.
    pub settings: Settings,
    /// Where connections are served.
    pub workers: Workers,
    /// Admin HTTP port (`/healthz`, `/readyz`, `/metrics`, `/status`); `None` disables it,
    /// 0 picks a free port.
    pub admin_port: Option<u16>,
}

/// Where client connections run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    /// On the caller's runtime (tests, embedding).
    Ambient,
    /// On this many threads, each with its own single-threaded runtime and listening sockets.
    Threads(usize),
}

/// A running pooler.
pub struct RunningPooler {
    /// Where the session port listens.
    pub session_addr: SocketAddr,
    /// Where the pooled port listens.
    pub pooled_addr: SocketAddr,
    /// Where the admin port listens, if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// Readiness flags reported by `/readyz`.
    pub readiness: Arc<admin::Readiness>,
    admin_stop: CancellationToken,
    /// Tenants, pools and cancel keys.
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    abort: CancellationToken,
    tracker: TaskTracker,
    /// The tenant source's task (watching files or the API server).
    watcher: JoinHandle<()>,
    shards: Vec<std::thread::JoinHandle<()>>,
}

/// Why the pooler could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The tenants directory is missing.
    #[error("--tenants-dir {0} is not a directory")]
    NoTenantsDir(PathBuf),
    /// The Kubernetes source could not be set up (names, kubeconfig, client).
    #[error(transparent)]
    Kubernetes(#[from] KubernetesSourceError),
    /// A port could not be bound.
    #[error(transparent)]
    Bind(#[from] std::io::Error),
}

impl RunningPooler {
    /// Binds both ports, starts the tenant source, then starts accepting. A directory is
    /// loaded before the ports accept; the Kubernetes source syncs in the background (the
    /// API server may not be reachable yet) and `/readyz` waits for it.
    pub async fn start(config: PoolerConfig) -> Result<Self, StartError> {
        // Configuration errors first, before anything is spawned.
        let source = match &config.tenant_source {
            TenantSourceConfig::Directory(dir) if !dir.is_dir() => {
                return Err(StartError::NoTenantsDir(dir.clone()));
            }
            TenantSourceConfig::Directory(dir) => {
                Source::Directory(Arc::new(DirectorySource::new(dir.clone())))
            }
            TenantSourceConfig::Kubernetes(k) => {
                Source::Kubernetes(Box::new(KubernetesSource::connect(k).await?))
            }
        };
        let shared = Shared::new(config.settings.clone());
        let shutdown = CancellationToken::new();
        let abort = CancellationToken::new();
        let tracker = TaskTracker::new();

        // SIGHUP is caught before anything else (it reloads a directory, relists Secrets).
        let hup = tenants::directory::sighup_reloads(shutdown.clone())?;
        let tenants = Arc::clone(&shared.tenants);
        let pools = Arc::clone(&shared.pools);
        let watcher = match source {
            Source::Directory(source) => {
                // Tenants load before any port accepts, so the first clients find them.
                source.reload(&tenants, &pools).await;
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = source.watch(tenants, pools, hup, stop).await {
                        tracing::error!(error = %e, "cannot watch the tenants directory: changes are not loaded until restart");
                    }
                })
            }
            Source::Kubernetes(source) => {
                tokio::spawn(source.run(tenants, pools, hup, shutdown.clone()))
            }
        };

        let serving = Serving {
            shared: Arc::clone(&shared),
            max_connections: config.max_connections,
            shutdown: shutdown.clone(),
            abort: abort.clone(),
            tracker: tracker.clone(),
        };
        let (session_addr, pooled_addr, shards) = match config.workers {
            Workers::Ambient => {
                let session =
                    listener::bind(SocketAddr::new(config.listen, config.session_port), false)
                        .await?;
                let pooled =
                    listener::bind(SocketAddr::new(config.listen, config.pooled_port), false)
                        .await?;
                let addrs = (session.local_addr()?, pooled.local_addr()?);
                serving.spawn(session, pooled);
                (addrs.0, addrs.1, Vec::new())
            }
            Workers::Threads(n) => {
                let mut session = SocketAddr::new(config.listen, config.session_port);
                let mut pooled = SocketAddr::new(config.listen, config.pooled_port);
                let mut shards = Vec::new();
                for index in 0..n.max(1) {
                    let (handle, addrs) = spawn_shard(
                        index,
                        session,
                        pooled,
                        serving.clone(),
                        tokio::runtime::Handle::current(),
                    )?;
                    // Port 0 picks a free port for the first shard; the others share it.
                    (session, pooled) = addrs;
                    shards.push(handle);
                }
                (session, pooled, shards)
            }
        };
        let readiness = Arc::new(admin::Readiness::default());
        let admin_stop = CancellationToken::new();
        let admin_addr = match config.admin_port {
            Some(port) => {
                let listener = listener::bind(SocketAddr::new(config.listen, port), false).await?;
                let addr = listener.local_addr()?;
                let state = admin::AdminState {
                    shared: Arc::clone(&shared),
                    readiness: Arc::clone(&readiness),
                };
                tokio::spawn(admin::serve(listener, state, admin_stop.clone()));
                Some(addr)
            }
            None => None,
        };
        readiness
            .listening
            .store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(session = %session_addr, pooled = %pooled_addr, admin = ?admin_addr, "listening");
        Ok(RunningPooler {
            session_addr,
            pooled_addr,
            admin_addr,
            readiness,
            admin_stop,
            shared,
            shutdown,
            abort,
            tracker,
            watcher,
            shards,
        })
    }

    /// Stops accepting and watching, and gives connections `grace` to end.
    pub async fn stop(self, grace: Duration) {
        self.drain(Duration::ZERO, grace).await;
    }

    /// Graceful shutdown, as Kubernetes expects of a pod given SIGTERM:
    /// 1. `/readyz` fails at once, so the Service stops sending new clients;
    /// 2. after `delay` (endpoint updates take a moment to spread), the ports stop accepting
    ///    and clients are closed with `57P01` at their next transaction boundary (idle ones at
    ///    once); transactions in flight finish;
    /// 3. whatever is left when `grace` (counted from the start) runs out is dropped.
    pub async fn drain(self, delay: Duration, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.readiness
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        crate::timer::sleep_until((tokio::time::Instant::now() + delay).min(deadline)).await;
        tracing::info!("draining: no new connections; closing clients at transaction boundaries");
        self.shutdown.cancel();
        self.shared.start_draining();
        self.tracker.close();
        let _ = crate::timer::timeout_at(deadline, self.tracker.wait()).await;
        let left = self.tracker.len();
        if left > 0 {
            tracing::warn!(connections = left, "grace period over; dropping the rest");
        }
        self.abort.cancel();
        self.admin_stop.cancel();
        let _ = self.watcher.await;
        let shards = self.shards;
        let _ = tokio::task::spawn_blocking(move || {
            for shard in shards {
                let _ = shard.join();
            }
        })
        .await;
    }
}

/// A tenant source, set up and not yet running.
enum Source {
    Directory(Arc<DirectorySource>),
    Kubernetes(Box<KubernetesSource>),
}

/// What every accept loop needs.
#[derive(Clone)]
struct Serving {
    shared: Arc<Shared>,
    max_connections: usize,
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over: workers drop what is left.
    abort: CancellationToken,
    tracker: TaskTracker,
}

impl Serving {
    /// Starts both accept loops on the current runtime.
    fn spawn(&self, session: TcpListener, pooled: TcpListener) {
        for (listener, port) in [(session, Port::Session), (pooled, Port::Pooled)] {
            tokio::spawn(listener::run(
                listener,
                port,
                Arc::clone(&self.shared),
                self.max_connections,
                self.shutdown.clone(),
                self.tracker.clone(),
            ));
        }
    }
}

/// Starts worker `index`: a thread with its own single-threaded runtime and its own listening
/// sockets on both ports (SO_REUSEPORT, so the kernel spreads connections across workers).
/// A client's task never migrates between threads, which keeps wakeups cheap; pools are shared.
fn spawn_shard(
    index: usize,
    session: SocketAddr,
    pooled: SocketAddr,
    serving: Serving,
    timers: tokio::runtime::Handle,
) -> Result<(std::thread::JoinHandle<()>, (SocketAddr, SocketAddr)), StartError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("pgfleet-worker-{index}"))
        .spawn(move || {
            crate::worker::set_current(index);
            // I/O only. Signals are the main runtime's; a process driver would look for child
            // processes to reap on every park, and a time driver would read the clock and walk
            // its wheel on every park: this thread's timers run on the main runtime instead
            // (see `crate::timer`). The main runtime outlives the worker: `drain` joins it.
            crate::timer::use_timers_of(timers);
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(StartError::Bind(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let bound = async {
                    let s = listener::bind(session, true).await?;
                    let p = listener::bind(pooled, true).await?;
                    Ok::<_, std::io::Error>((s, p))
                };
                let (s, p) = match bound.await {
                    Ok(pair) => pair,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Bind(e)));
                        return;
                    }
                };
                let addrs = (s.local_addr(), p.local_addr());
                let (Ok(sa), Ok(pa)) = addrs else {
                    let _ = ready_tx.send(Err(StartError::Bind(std::io::Error::other(
                        "no local address",
                    ))));
                    return;
                };
                serving.spawn(s, p);
                let _ = ready_tx.send(Ok((sa, pa)));
                serving.shutdown.cancelled().await;
                // Keep serving the connections still draining until they end or time is up.
                tokio::select! {
                    _ = serving.tracker.wait() => {}
                    _ = serving.abort.cancelled() => {}
                }
            });
        })
        .map_err(StartError::Bind)?;
    let addrs = ready_rx.recv().map_err(|_| {
        StartError::Bind(std::io::Error::other("worker thread died during start"))
    })??;
    Ok((handle, addrs))
}
