//! The `Tenant` controller: renders each accepted Tenant into its tenant document (a Secret in
//! its fleet's namespace, which the fleet's poolers watch), keeps that document current, and
//! reports what it did in the Tenant's status and events.
//!
//! # Pipeline
//!
//! Each reconcile runs under the finalizer [`FINALIZER`]
//! (documents may live in another namespace, so owner references cannot clean them up):
//!
//! 1. **fleet**: `spec.fleetRef` (default: `default` in the Tenant's namespace) must exist and
//!    admit the Tenant's namespace (its own always; others through
//!    `allowedTenantNamespaces`, `"*"` meaning every namespace);
//! 2. **externalId**: the oldest Tenant claiming an externalId in a fleet keeps it, the others
//!    are rejected (see [`admission`]);
//! 3. **Secrets**: every `passwordSecretRef`, `authQuery.userSecretRef` (keys `username` and
//!    `password`) and `upstream.tls.caSecretRef` is read from the Tenant's namespace
//!    ([`resolve`]);
//! 4. **render**: the tenant document, budgets split per replica, checked with the pooler's own
//!    validation (what the schema could not refuse is `InvalidSpec`);
//! 5. **apply**: the document Secret is server-side applied (skipped when it already says
//!    the same), and a document left at a previous fleet's namespace is deleted;
//! 6. **status**: `observedGeneration`, `Accepted`, `Ready`, `endpoint` and `fleet`, written
//!    with server-side apply on the status subresource, only when changed ([`status`]); events
//!    on changes ([`events`]).
//!
//! # Decisions
//!
//! - **A Tenant has a document if and only if it is Accepted.** When it stops being accepted
//!   (a Secret or key deleted, an externalId conflict, its fleet deleted or no longer admitting
//!   its namespace, an unrenderable spec) its document is deleted, so the poolers drain it
//!   rather than keep serving credentials or access someone revoked. Rotate a password by
//!   updating the Secret in place (that re-renders); deleting and recreating it interrupts the
//!   tenant. API errors are not decisions: they are retried with backoff and leave the
//!   document as it is.
//! - **Budgets are split across `max(spec.replicas, status.replicas, 1)`** of the fleet, not
//!   its ready replicas as DESIGN §3 first said: during a scale-up, replicas that are not yet
//!   ready would otherwise be counted out of the split and each get a larger share than the
//!   total allows once they are ready. Counting desired and existing pods under-admits a little
//!   while pods are missing instead, which never exceeds the upstream's budget.
//! - **endpoint** is `postgresql://<user>.<externalId>@<fleet>.<fleet namespace>.svc:<pooled
//!   port>/<upstream.database>` with a literal `<user>` (see [`status::endpoint`]).
//! - Invalid specs wait for the next change of the Tenant ([`Action::await_change`]); every
//!   other outcome is also re-checked every [`RESYNC_INTERVAL`] as a safety net, though
//!   Secrets, fleets and other Tenants wake a Tenant up through watches ([`triggers`]).
//! - Errors are retried per Tenant with exponential backoff (1 s doubling to 5 minutes), reset
//!   by the next success.
//! - `PoolerFleet.status.tenants` is the fleet controller's to write (a single writer, counting
//!   the Accepted Tenants whose status names the fleet, from its own Tenant reflector):
//!   counting from each Tenant's reconcile would race, the last concurrent write winning.
//!
//! [`Action::await_change`]: kube::runtime::controller::Action::await_change

pub mod admission;
pub mod events;
mod reconcile;
pub mod resolve;
pub mod status;
pub mod triggers;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, finalizer, watcher};
use pgfleet_crds::{PoolerFleet, Tenant};

use crate::apply::api_in;
use crate::backoff::{BACKOFF_INITIAL, BACKOFF_MAX, Backoff, object_key};
use crate::resources::RenderError;

pub use reconcile::{budget_replicas, reconcile};

/// The finalizer every Tenant carries until its document is deleted.
pub const FINALIZER: &str = "pgfleet.io/tenant-document";

/// How often an accepted (or not yet acceptable) Tenant is reconciled without a watch event.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Why a reconcile failed. Every variant is retried with the Tenant's exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Tenant handed to the reconciler lacks its name or namespace.
    #[error("the Tenant has no metadata.{0}")]
    MissingObjectKey(&'static str),
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the controller was doing (`reading Secret team-a/app-pw`).
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A builder failed for a reason that is not the Tenant's (missing metadata).
    #[error("building the tenant document: {0}")]
    Build(#[source] RenderError),
    /// Adding or removing the finalizer failed, or the reconcile inside it did.
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

/// What every reconcile shares: the API client, the event recorder and the per-Tenant retry
/// backoff.
pub struct Context {
    /// The client every read and write goes through.
    pub client: Client,
    recorder: Recorder,
    events: events::EventLog,
    backoff: Backoff,
}

impl Context {
    /// A context reporting events as `pgfleet-operator` (instance: the host name, which is the
    /// pod name in a cluster), with the default backoff (1 s doubling up to 5 minutes).
    pub fn new(client: Client) -> Self {
        let reporter = Reporter::from(events::REPORTING_CONTROLLER);
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            events: events::EventLog::default(),
            backoff: Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX),
        }
    }

    /// Consecutive failed reconciles of the Tenant `namespace/name` (0 after a success).
    pub fn failures(&self, namespace: &str, name: &str) -> u32 {
        self.backoff.failures(&object_key(namespace, name))
    }
}

/// The context plus the controller's view of every Tenant (its reflector's store): what each
/// reconcile is given. Opaque outside this module; built by [`tenant_controller`].
pub struct State {
    ctx: Arc<Context>,
    tenants: Store<Tenant>,
}

fn tenant_key(tenant: &Tenant) -> String {
    object_key(
        tenant.metadata.namespace.as_deref().unwrap_or_default(),
        tenant.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Retries a failed reconcile after the Tenant's next backoff delay.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, state: Arc<State>) -> Action {
    state
        .ctx
        .backoff
        .requeue_failed("Tenant", &tenant_key(&tenant), error)
}

/// Runs the Tenant controller over every namespace until its watches end.
///
/// Needs to list and watch Tenants, PoolerFleets and Secrets (metadata) cluster-wide, get
/// Secrets in Tenants' namespaces, write Tenants (finalizer, status) and tenant-document Secrets
/// in fleets' namespaces, and create and patch `events.k8s.io` Events.
pub async fn run_tenant_controller(client: Client, ctx: Arc<Context>) {
    run(client, ctx, None).await;
}

/// Runs the Tenant controller over one namespace only, until its watches end: Tenants,
/// Secrets and PoolerFleets are watched in `namespace` alone. For tests and single-namespace
/// installations, where fleets and Tenants share the namespace. A Tenant referencing a fleet
/// in another namespace is still evaluated (the fleet is read directly), but changes to that
/// fleet only reach it at the next resync.
pub async fn run_tenant_controller_in(client: Client, ctx: Arc<Context>, namespace: &str) {
    run(client, ctx, Some(namespace)).await;
}

async fn run(client: Client, ctx: Arc<Context>, namespace: Option<&str>) {
    let (controller, state) = tenant_controller(&client, ctx, namespace);
    controller
        .run(reconcile, error_policy, state)
        .for_each(|result| async move {
            match result {
                Ok((tenant, _)) => tracing::debug!(tenant = %tenant, "reconciled"),
                Err(error) => tracing::warn!(%error, "tenant controller"),
            }
        })
        .await;
}

/// The Tenant controller's watches (in `namespace`, or everywhere), and the state its
/// reconciles share: run it with [`reconcile`] and [`error_policy`]. The operator binary
/// does, so that it can count and time every reconcile.
pub fn tenant_controller(
    client: &Client,
    ctx: Arc<Context>,
    namespace: Option<&str>,
) -> (Controller<Tenant>, Arc<State>) {
    let wc = watcher::Config::default;
    let (store, writer) = reflector::store::<Tenant>();
    let tenants = triggers::tenant_triggers(
        watcher(api_in::<Tenant>(client, namespace), wc()),
        writer,
        store.clone(),
    );
    let fleets = triggers::fleet_changes(watcher(api_in::<PoolerFleet>(client, namespace), wc()));
    // Metadata only: the operator reads the Secrets it needs when it needs them.
    let secrets =
        watcher(api_in::<PartialObjectMeta<Secret>>(client, namespace), wc()).touched_objects();

    let fleet_store = store.clone();
    let secret_store = store.clone();
    let state = Arc::new(State {
        ctx,
        tenants: store.clone(),
    });
    let controller = Controller::for_stream(tenants, store)
        .watches_stream(fleets, move |fleet| {
            triggers::tenants_of_fleet(&fleet_store.state(), &fleet)
        })
        .watches_stream(secrets, move |secret| {
            triggers::tenants_for_secret(&secret_store.state(), &secret.metadata)
        });
    (controller, state)
}
