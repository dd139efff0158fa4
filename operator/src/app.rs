//! The operator process: admin server, Kubernetes client, leader election, controllers.
//!
//! 1. The flags are checked (a missing Lease namespace fails here, before anything starts).
//! 2. The admin server starts (`/healthz` answers from now on) and logs its address.
//! 3. The client is built from the standard configuration (`KUBECONFIG`, the kubeconfig file,
//!    or the in-cluster ServiceAccount) and the API server is asked for its version until it
//!    answers.
//! 4. With leader election, the replica competes for the Lease and stands by (ready, `leader`
//!    0) until it holds it; the leader then starts the controllers ([`start_controllers`]) and
//!    renews the Lease. Without, the controllers start at once.
//! 5. SIGTERM or SIGINT: the controllers stop (in-flight reconciles get up to
//!    [`CONTROLLER_STOP_TIMEOUT`] to finish, less if the renew deadline comes first), the
//!    leader releases the Lease so a standby takes over at once, and the process exits 0. A
//!    leader that cannot renew the Lease within the renew deadline, or whose controller stops
//!    on its own, exits non-zero instead (as controller-runtime does): Kubernetes restarts it,
//!    as a standby.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::runtime::controller::{self, Action, Controller};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState, Health, Role};
use crate::config::{
    Args, ConfigError, SERVICE_ACCOUNT_NAMESPACE_FILE, hostname, read_namespace_file,
};
use crate::fleet_controller::{self, error_policy, reconcile_fleet};
use crate::leader_election::{ElectionConfig, LeaderElector, LostLeadership};
use crate::metrics::Metrics;
use crate::tenant_controller;

/// How long stopping controllers get to finish the reconciles they are running before they are
/// aborted.
pub const CONTROLLER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The most time releasing the Lease at shutdown may take.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most time the admin server gets to finish its requests at shutdown.
pub const ADMIN_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two attempts to reach the API server at start.
const API_RETRY: Duration = Duration::from_secs(2);

/// Why the operator stopped other than by a stop signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The flags are inconsistent or incomplete.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The admin address cannot be bound.
    #[error("cannot listen on the admin address {addr}: {source}")]
    AdminBind {
        /// `--admin-addr`.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No Kubernetes client configuration was found.
    #[error(
        "cannot configure the Kubernetes client (KUBECONFIG, ~/.kube/config or in-cluster): {0}"
    )]
    Client(#[source] kube::Error),
    /// The leader lost the Lease; it must not act as leader any more.
    #[error("lost leadership: {0}")]
    LostLeadership(#[from] LostLeadership),
    /// A controller stopped although nothing asked it to.
    #[error("the {0} controller stopped unexpectedly")]
    ControllerStopped(&'static str),
    /// A controller's task panicked.
    #[error("a controller failed: {0}")]
    ControllerFailed(String),
}

/// What the controllers need, built once per process.
#[derive(Clone)]
pub struct ControllerSettings {
    /// The API client.
    pub client: Client,
    /// The default pooler image (`--pooler-image`).
    pub pooler_image: String,
    /// The namespace to watch, or `None` for all (`--namespace`).
    pub namespace: Option<String>,
    /// Where reconcile results are counted.
    pub metrics: Metrics,
}

/// Runs the operator until a stop signal (`Ok`) or a fatal error.
pub async fn run(args: Args) -> Result<(), RunError> {
    let election = args.election_config(
        read_namespace_file(std::path::Path::new(SERVICE_ACCOUNT_NAMESPACE_FILE)),
        &hostname(),
    )?;

    let metrics = Metrics::new();
    let health = Arc::new(Health::default());
    let (listener, admin_addr) =
        admin::bind(args.admin_addr)
            .await
            .map_err(|source| RunError::AdminBind {
                addr: args.admin_addr,
                source,
            })?;
    tracing::info!(addr = %admin_addr, "admin server listening");
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(admin::serve(
        listener,
        AdminState {
            health: health.clone(),
            metrics: metrics.clone(),
        },
        admin_stop.clone(),
    ));

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_stop_signal(shutdown.clone()));

    let result = async {
        let client = Client::try_default().await.map_err(RunError::Client)?;
        if !wait_for_api(&client, &shutdown).await {
            return Ok(());
        }
        health.set_api_reachable();
        let settings = ControllerSettings {
            client: client.clone(),
            pooler_image: args.pooler_image.clone(),
            namespace: args.watch_namespace().map(str::to_string),
            metrics: metrics.clone(),
        };
        tracing::info!(
            namespace = settings.namespace.as_deref().unwrap_or("(all)"),
            pooler_image = %settings.pooler_image,
            leader_election = election.is_some(),
            "operator starting"
        );
        match election {
            Some(config) => run_elected(client, config, settings, &health, &shutdown).await,
            None => run_unelected(settings, &health, &shutdown).await,
        }
    }
    .await;

    health.set_role(Role::Stopping);
    metrics.set_leader(false);
    admin_stop.cancel();
    // Graceful, but a client holding a connection open must not keep the process alive.
    if tokio::time::timeout(ADMIN_STOP_TIMEOUT, admin)
        .await
        .is_err()
    {
        tracing::debug!("admin server still had connections open; leaving them");
    }
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

/// Asks the API server for its version until it answers (`true`) or the stop signal comes
/// (`false`).
async fn wait_for_api(client: &Client, shutdown: &CancellationToken) -> bool {
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return false,
            v = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()) => v,
        };
        match attempt {
            Ok(Ok(version)) => {
                tracing::info!(version = %version.git_version, "connected to the Kubernetes API");
                return true;
            }
            Ok(Err(error)) => tracing::warn!(%error, "the Kubernetes API is not reachable yet"),
            Err(_) => tracing::warn!("the Kubernetes API did not answer within 10 s"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(API_RETRY) => {}
        }
    }
}

async fn run_unelected(
    settings: ControllerSettings,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let stop_controllers = CancellationToken::new();
    let mut controllers = start_controllers(&settings, &stop_controllers);
    settings.metrics.set_leader(true);
    health.set_role(Role::Leader);
    tracing::info!("controllers running (leader election off)");
    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        ended = controllers.join_next() => Err(stopped(ended)),
    };
    health.set_role(Role::Stopping);
    stop(&mut controllers, &stop_controllers, CONTROLLER_STOP_TIMEOUT).await;
    result
}

async fn run_elected(
    client: Client,
    config: ElectionConfig,
    settings: ControllerSettings,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let mut elector = LeaderElector::new(client, config);
    let config = elector.config().clone();
    tracing::info!(
        lease = %format!("{}/{}", config.namespace, config.lease_name),
        identity = %config.identity,
        lease_duration = ?config.lease_duration,
        renew_deadline = ?config.renew_deadline,
        retry_period = ?config.retry_period,
        "competing for leadership"
    );
    // A standby is healthy and ready: it only waits.
    health.set_role(Role::Standby);
    let acquired = tokio::select! {
        _ = shutdown.cancelled() => {
            // The attempt cut short may have written the Lease: give it back if so.
            release(&mut elector).await;
            return Ok(());
        }
        acquired = elector.acquire() => acquired,
    };

    settings.metrics.became_leader();
    settings.metrics.set_leader(true);
    tracing::info!(identity = %config.identity, "became the leader; starting controllers");
    let stop_controllers = CancellationToken::new();
    let mut controllers = start_controllers(&settings, &stop_controllers);
    health.set_role(Role::Leader);

    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        lost = elector.hold(acquired) => Err(RunError::LostLeadership(lost)),
        ended = controllers.join_next() => Err(stopped(ended)),
    };
    health.set_role(Role::Stopping);
    settings.metrics.set_leader(false);
    match &result {
        Err(RunError::LostLeadership(lost)) => {
            // Stop acting as leader at once: abort, do not wait, do not touch the Lease.
            tracing::error!(reason = %lost, "lost leadership; exiting so a restart comes back as a standby");
            controllers.abort_all();
        }
        _ => {
            // Nothing renews the Lease while the controllers drain: they must be gone before
            // a standby could take over.
            let drain = CONTROLLER_STOP_TIMEOUT.min(elector.leadership_left());
            stop(&mut controllers, &stop_controllers, drain).await;
            release(&mut elector).await;
        }
    }
    result
}

/// Releases the Lease if this replica holds it, bounded by [`RELEASE_TIMEOUT`].
async fn release(elector: &mut LeaderElector) {
    match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot release the Lease; a standby takes over when it expires");
        }
        Err(_) => {
            tracing::warn!("releasing the Lease timed out; a standby takes over when it expires");
        }
    }
}

fn stopped(ended: Option<Result<&'static str, tokio::task::JoinError>>) -> RunError {
    match ended {
        Some(Ok(name)) => RunError::ControllerStopped(name),
        Some(Err(error)) => RunError::ControllerFailed(error.to_string()),
        None => RunError::ControllerFailed("no controller is running".into()),
    }
}

/// Asks the controllers to stop gracefully, waits up to `timeout`, then aborts the rest.
async fn stop(
    controllers: &mut JoinSet<&'static str>,
    stop: &CancellationToken,
    timeout: Duration,
) {
    stop.cancel();
    let drained = tokio::time::timeout(timeout, async {
        while controllers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("controllers did not stop in time; aborting them");
        controllers.abort_all();
        while controllers.join_next().await.is_some() {}
    }
    tracing::info!("controllers stopped");
}

/// Starts every controller in its own task; each task returns the controller's name when it
/// ends (which only `stop` should cause).
///
/// Adding a controller is one `spawn` here: either through [`run_instrumented`] (reconciles
/// counted and timed in `/metrics`), given the controller's watches as a [`Controller`] and
/// its reconcile and error-policy functions, or as a plain future.
pub fn start_controllers(
    settings: &ControllerSettings,
    stop: &CancellationToken,
) -> JoinSet<&'static str> {
    let mut controllers = JoinSet::new();
    let client = &settings.client;
    let namespace = settings.namespace.as_deref();

    let fleet_ctx = Arc::new(fleet_controller::Context::new(
        client.clone(),
        settings.pooler_image.clone(),
    ));
    controllers.spawn(run_instrumented(
        "fleet",
        fleet_controller::fleet_controller(client, namespace, &fleet_ctx),
        reconcile_fleet,
        error_policy,
        fleet_ctx,
        settings.metrics.clone(),
        stop.clone(),
    ));

    let tenant_ctx = Arc::new(tenant_controller::Context::new(client.clone()));
    let (tenants, tenant_state) =
        tenant_controller::tenant_controller(client, tenant_ctx, namespace);
    controllers.spawn(run_instrumented(
        "tenant",
        tenants,
        tenant_controller::reconcile,
        tenant_controller::error_policy,
        tenant_state,
        settings.metrics.clone(),
        stop.clone(),
    ));

    controllers
}

/// Runs `controller` with `reconcile` and `error_policy` until `stop` (then in-flight reconciles
/// finish) or its watches end, counting and timing every reconcile and every error the
/// controller reports in `metrics` under the name `name`. Returns `name`.
pub async fn run_instrumented<K, C, E, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    mut reconcile: F,
    error_policy: impl Fn(Arc<K>, &E, Arc<C>) -> Action + Send + 'static,
    ctx: Arc<C>,
    metrics: Metrics,
    stop: CancellationToken,
) -> &'static str
where
    K: Clone + Resource + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Debug + Unpin,
    C: Send + Sync + 'static,
    E: std::error::Error + Send + 'static,
    F: FnMut(Arc<K>, Arc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let timed = metrics.clone();
    controller
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(
            move |object, ctx| {
                let reconciling = reconcile(object, ctx);
                let metrics = timed.clone();
                async move {
                    let started = Instant::now();
                    let result = reconciling.await;
                    metrics.reconciled(name, started.elapsed(), result.is_ok());
                    result
                }
            },
            error_policy,
            ctx,
        )
        .for_each(|result| {
            match result {
                Ok((object, _)) => tracing::debug!(controller = name, %object, "reconciled"),
                Err(error) => {
                    let kind = match &error {
                        controller::Error::ReconcilerFailed(..) => "reconcile",
                        controller::Error::QueueError(_) => "watch",
                        controller::Error::ObjectNotFound(_) => "object_not_found",
                        controller::Error::RunnerError(_) => "runner",
                    };
                    metrics.controller_error(name, kind);
                    if kind == "object_not_found" {
                        tracing::debug!(controller = name, %error, "controller");
                    } else {
                        tracing::warn!(controller = name, %error, "controller");
                    }
                }
            }
            std::future::ready(())
        })
        .await;
    name
}

/// Cancels `token` on SIGTERM or SIGINT.
async fn cancel_on_stop_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop signal received; shutting down");
    token.cancel();
}
