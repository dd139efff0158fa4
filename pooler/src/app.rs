//! The pooler as a whole: listeners, tenant source and shutdown, for `main` and for tests.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::Port;
use crate::tenants::directory::DirectorySource;
use crate::{Settings, Shared, listener, tenants};

/// What to run.
#[derive(Clone, Debug)]
pub struct PoolerConfig {
    /// Directory of tenant documents.
    pub tenants_dir: PathBuf,
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
}

/// A running pooler.
pub struct RunningPooler {
    /// Where the session port listens.
    pub session_addr: SocketAddr,
    /// Where the pooled port listens.
    pub pooled_addr: SocketAddr,
    /// Tenants, pools and cancel keys.
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    watcher: JoinHandle<Result<(), notify::Error>>,
}

/// Why the pooler could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The tenants directory is missing.
    #[error("--tenants-dir {0} is not a directory")]
    NoTenantsDir(PathBuf),
    /// A port could not be bound.
    #[error(transparent)]
    Bind(#[from] std::io::Error),
}

impl RunningPooler {
    /// Binds both ports, loads the tenants, then starts accepting and watching.
    pub async fn start(config: PoolerConfig) -> Result<Self, StartError> {
        if !config.tenants_dir.is_dir() {
            return Err(StartError::NoTenantsDir(config.tenants_dir));
        }
        let shared = Shared::new(config.settings.clone());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let session = listener::bind(SocketAddr::new(config.listen, config.session_port)).await?;
        let pooled = listener::bind(SocketAddr::new(config.listen, config.pooled_port)).await?;
        let (session_addr, pooled_addr) = (session.local_addr()?, pooled.local_addr()?);

        // SIGHUP is caught before anything else, then tenants load before accepting, so the
        // first clients find them.
        let hup = tenants::directory::sighup_reloads(shutdown.clone())?;
        let source = Arc::new(DirectorySource::new(config.tenants_dir.clone()));
        source.reload(&shared.tenants, &shared.pools).await;
        let watcher = tokio::spawn(Arc::clone(&source).watch(
            Arc::clone(&shared.tenants),
            Arc::clone(&shared.pools),
            hup,
            shutdown.clone(),
        ));
        for (listener, port) in [(session, Port::Session), (pooled, Port::Pooled)] {
            tracing::info!(addr = %listener.local_addr()?, ?port, "listening");
            tokio::spawn(listener::run(
                listener,
                port,
                Arc::clone(&shared),
                config.max_connections,
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        Ok(RunningPooler {
            session_addr,
            pooled_addr,
            shared,
            shutdown,
            tracker,
            watcher,
        })
    }

    /// Stops accepting and watching, and gives connections `grace` to end.
    pub async fn stop(self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
        if let Ok(Err(e)) = self.watcher.await {
            tracing::warn!(error = %e, "tenant watcher stopped with an error");
        }
    }
}
