//! The `PoolerFleet` controller: keeps each fleet's children in the shape the builders in
//! [`crate::resources`] describe, and reports what it sees in the fleet's status.
//!
//! Each reconcile is a pipeline:
//!
//! 1. **fetch**: the fleet comes from the controller's watch cache; a fleet being deleted is
//!    left alone (its children carry owner references, so garbage collection removes them);
//! 2. **validate and build**: every child is built by the pure builders first, so an invalid
//!    spec changes nothing in the cluster; it is reported as `Ready=False` (reason
//!    `InvalidSpec`) and the fleet waits for its next change instead of being retried;
//! 3. **apply**: each child is server-side applied under [`FIELD_MANAGER`](crate::FIELD_MANAGER) with `force`, in
//!    dependency order (ServiceAccount, Role, RoleBinding, Deployment, Service, then the
//!    PodDisruptionBudget, which is deleted when the builder says the fleet should have none);
//! 4. **status**: replicas, ready replicas, the pod selector, `observedGeneration` and the
//!    `Ready` and `Available` conditions, written with server-side apply on the status
//!    subresource, and only when they changed (so the controller's own writes settle instead of
//!    re-triggering it forever).
//!
//! Errors are retried with a per-fleet exponential backoff ([`Context`] tracks it): 1 s, 2 s,
//! 4 s, ... up to 5 minutes, reset by the next successful reconcile.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use pgfleet_crds::{PoolerFleet, PoolerFleetStatus, Tenant};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::apply::{api_in, server_side_apply, server_side_apply_status};
use crate::backoff::object_key;
pub use crate::backoff::{BACKOFF_INITIAL, BACKOFF_MAX, Backoff};
use crate::events::{EventLog, REPORTING_CONTROLLER, publish};
use crate::fleet_events::fleet_notices;
use crate::resources::{
    BuildError, FleetIdentity, deployment, pod_disruption_budget, role, role_binding,
    selector_string, service, service_account,
};

pub use pgfleet_crds::fleet::{CONDITION_AVAILABLE, CONDITION_READY};

/// Reason: every desired replica is ready.
pub const REASON_ALL_REPLICAS_READY: &str = "AllReplicasReady";
/// Reason: fewer replicas are ready than `spec.replicas` asks for.
pub const REASON_PODS_NOT_READY: &str = "PodsNotReady";
/// Reason: enough pods are ready, but the Deployment still runs old pods or has not yet
/// observed its latest spec.
pub const REASON_ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
/// Reason: `spec.replicas` is 0.
pub const REASON_SCALED_TO_ZERO: &str = "ScaledToZero";
/// Reason: at least one replica is available.
pub const REASON_MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
/// Reason: no replica is available.
pub const REASON_NO_REPLICAS_AVAILABLE: &str = "NoReplicasAvailable";
/// Reason: the spec could not be turned into children (the message says why).
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// How often a healthy fleet is reconciled even without a watch event (a safety net against
/// missed events; changes to the fleet or its children trigger a reconcile at once).
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Why a reconcile failed. Every variant is retried with backoff by [`error_policy`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The fleet handed to the reconciler lacks its name or namespace.
    #[error("the PoolerFleet has no metadata.{0}")]
    MissingObjectKey(&'static str),
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the controller was doing (`server-side apply of Deployment db/edge`).
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

/// What every reconcile shares: the API client, the operator's defaults, and the per-fleet
/// retry backoff.
pub struct Context {
    /// The client every child and status write goes through.
    pub client: Client,
    /// The pooler image for fleets that do not name one (the operator's own version).
    pub default_image: String,
    backoff: Backoff,
    recorder: Recorder,
    events: EventLog,
    /// Every Tenant the controller can see, for `status.tenants`; fed by the Tenant watch that
    /// [`fleet_controller`] sets up (empty, and the count left unset, when nothing feeds it).
    tenants: Store<Tenant>,
    tenant_feed: Mutex<Option<Writer<Tenant>>>,
}

impl Context {
    /// A context with the default backoff (1 s doubling up to 5 minutes).
    pub fn new(client: Client, default_image: impl Into<String>) -> Self {
        let (tenants, feed) = reflector::store();
        Context {
            tenants,
            tenant_feed: Mutex::new(Some(feed)),
            recorder: Recorder::new(client.clone(), Reporter::from(REPORTING_CONTROLLER)),
            client,
            default_image: default_image.into(),
            backoff: Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX),
            events: EventLog::default(),
        }
    }

    /// Accepted Tenants served by the fleet `namespace/name` (whose status names it), or
    /// `None` while the Tenant watch has not listed them yet (or does not run).
    fn tenant_count(&self, namespace: &str, name: &str) -> Option<i32> {
        // Listed at least once (the store is ready only after the watch's first full list).
        let listed = self.tenants.wait_until_ready().now_or_never();
        if !matches!(listed, Some(Ok(()))) {
            return None;
        }
        let fleet = object_key(namespace, name);
        let count = self
            .tenants
            .state()
            .iter()
            .filter(|t| serves(t, &fleet))
            .count();
        Some(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// Consecutive failed reconciles of the fleet `namespace/name` (0 after a success).
    pub fn failures(&self, namespace: &str, name: &str) -> u32 {
        self.backoff.failures(&object_key(namespace, name))
    }
}

fn fleet_key(fleet: &PoolerFleet) -> String {
    object_key(
        fleet.metadata.namespace.as_deref().unwrap_or_default(),
        fleet.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Every child of a fleet, as the builders make them.
struct Children {
    service_account: ServiceAccount,
    role: Role,
    role_binding: RoleBinding,
    deployment: Deployment,
    service: Service,
    pod_disruption_budget: Option<PodDisruptionBudget>,
}

fn build_children(fleet: &PoolerFleet, default_image: &str) -> Result<Children, BuildError> {
    Ok(Children {
        service_account: service_account(fleet)?,
        role: role(fleet)?,
        role_binding: role_binding(fleet)?,
        deployment: deployment(fleet, default_image)?,
        service: service(fleet)?,
        pod_disruption_budget: pod_disruption_budget(fleet)?,
    })
}

/// Reconciles one fleet: builds every child, applies them, deletes a PodDisruptionBudget the
/// fleet should no longer have, and writes the status when it changed.
///
/// Returns [`Action::await_change`] for a fleet being deleted or with an invalid spec (reported
/// in its status), else a requeue after [`RESYNC_INTERVAL`].
pub async fn reconcile_fleet(fleet: Arc<PoolerFleet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = fleet
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("name"))?;
    let namespace = fleet
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let key = object_key(&namespace, &name);

    if fleet.metadata.deletion_timestamp.is_some() {
        tracing::debug!(fleet = %key, "fleet is being deleted; its children are garbage-collected");
        ctx.backoff.succeeded(&key);
        ctx.events
            .forget(fleet.metadata.uid.as_deref().unwrap_or_default());
        return Ok(Action::await_change());
    }

    let children = match build_children(&fleet, &ctx.default_image) {
        Ok(children) => children,
        Err(error) => {
            tracing::warn!(fleet = %key, %error, "invalid PoolerFleet spec");
            let desired = fleet_status(&fleet, None, Some(&error), now());
            announce(&ctx, &fleet, &desired).await;
            write_status(&ctx.client, &fleet, desired).await?;
            ctx.backoff.succeeded(&key);
            return Ok(Action::await_change());
        }
    };

    let client = &ctx.client;
    apply(client, &namespace, &children.service_account).await?;
    apply(client, &namespace, &children.role).await?;
    apply(client, &namespace, &children.role_binding).await?;
    let applied_deployment = apply(client, &namespace, &children.deployment).await?;
    apply(client, &namespace, &children.service).await?;
    match &children.pod_disruption_budget {
        Some(pdb) => {
            apply(client, &namespace, pdb).await?;
        }
        None => {
            let id = FleetIdentity::of(&fleet).map_err(|_| Error::MissingObjectKey("uid"))?;
            delete_owned::<PodDisruptionBudget>(client, &namespace, &id.workload_name(), &id.uid)
                .await?;
        }
    }

    let mut desired = fleet_status(&fleet, Some(&applied_deployment), None, now());
    desired.tenants = ctx.tenant_count(&namespace, &name);
    announce(&ctx, &fleet, &desired).await;
    write_status(client, &fleet, desired).await?;

    ctx.backoff.succeeded(&key);
    Ok(Action::requeue(RESYNC_INTERVAL))
}

/// Publishes the events the status change from the fleet's current status to `desired`
/// deserves (see [`crate::fleet_events`]).
async fn announce(ctx: &Context, fleet: &PoolerFleet, desired: &PoolerFleetStatus) {
    for notice in fleet_notices(fleet.status.as_ref(), desired) {
        publish(&ctx.recorder, &ctx.events, fleet, notice).await;
    }
}

/// Retries a failed reconcile after the fleet's next backoff delay.
pub fn error_policy(fleet: Arc<PoolerFleet>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.backoff
        .requeue_failed("PoolerFleet", &fleet_key(&fleet), error)
}

/// Runs the fleet controller over every namespace until its watches end.
pub async fn run_fleet_controller(client: Client, ctx: Arc<Context>) {
    run(client, ctx, None).await;
}

/// Runs the fleet controller over one namespace only (fleets and children alike), until its
/// watches end. For tests and single-namespace installations.
pub async fn run_fleet_controller_in(client: Client, ctx: Arc<Context>, namespace: &str) {
    run(client, ctx, Some(namespace)).await;
}

/// The fleet controller's watches (fleets and their children, in `namespace` or everywhere),
/// not yet running: for runners that wrap [`reconcile_fleet`] (e.g. with metrics) and consume
/// the result stream themselves.
pub fn fleet_controller(
    client: &Client,
    namespace: Option<&str>,
    ctx: &Context,
) -> Controller<PoolerFleet> {
    let wc = watcher::Config::default;
    let controller = Controller::new(api_in::<PoolerFleet>(client, namespace), wc())
        .owns(api_in::<Deployment>(client, namespace), wc())
        .owns(api_in::<Service>(client, namespace), wc())
        .owns(api_in::<ServiceAccount>(client, namespace), wc())
        .owns(api_in::<Role>(client, namespace), wc())
        .owns(api_in::<RoleBinding>(client, namespace), wc())
        .owns(api_in::<PodDisruptionBudget>(client, namespace), wc());
    // Tenants wake the fleet they use (and the one they used, for a move), so that
    // `status.tenants` follows them. Only one controller per context can feed its store.
    let feed = ctx
        .tenant_feed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(feed) = feed else {
        tracing::warn!(
            "the Tenant store of this context is already fed; status.tenants stays as it is"
        );
        return controller;
    };
    let tenants = watcher(api_in::<Tenant>(client, namespace), wc())
        .default_backoff()
        .reflect(feed)
        .touched_objects();
    controller.watches_stream(tenants, |tenant| fleets_of(&tenant))
}

/// Whether `tenant` is accepted and served by the fleet `fleet` (`namespace/name`), as the
/// Tenant controller reports it in the Tenant's status.
fn serves(tenant: &Tenant, fleet: &str) -> bool {
    tenant.status.as_ref().is_some_and(|s| {
        s.fleet.as_deref() == Some(fleet)
            && s.conditions
                .iter()
                .any(|c| c.type_ == pgfleet_crds::tenant::CONDITION_ACCEPTED && c.status == "True")
    })
}

/// The fleets a Tenant change concerns: the one its spec names and the one its status says
/// served it.
fn fleets_of(tenant: &Tenant) -> Vec<ObjectRef<PoolerFleet>> {
    let own = tenant.metadata.namespace.clone().unwrap_or_default();
    let named = &tenant.spec.fleet_ref;
    let mut refs =
        vec![ObjectRef::new(&named.name).within(named.namespace.as_deref().unwrap_or(&own))];
    if let Some((namespace, name)) = tenant
        .status
        .as_ref()
        .and_then(|s| s.fleet.as_deref()?.split_once('/'))
    {
        let served = ObjectRef::new(name).within(namespace);
        if served != refs[0] {
            refs.push(served);
        }
    }
    refs
}

async fn run(client: Client, ctx: Arc<Context>, namespace: Option<&str>) {
    fleet_controller(&client, namespace, &ctx)
        .run(reconcile_fleet, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((fleet, _)) => tracing::debug!(fleet = %fleet, "reconciled"),
                Err(error) => tracing::warn!(%error, "fleet controller"),
            }
        })
        .await;
}

/// Server-side applies `obj` in `namespace` and returns the object as stored.
async fn apply<K>(client: &Client, namespace: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let name = obj.name_any();
    server_side_apply(client, namespace, obj)
        .await
        .map_err(Error::kube(format!(
            "server-side apply of {} {namespace}/{name}",
            K::kind(&())
        )))
}

/// Deletes `name` if it exists and is controlled by the owner with uid `owner_uid`; an object of
/// that name made by someone else is left alone.
async fn delete_owned<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&()).into_owned();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading {kind} {namespace}/{name}")))?
    else {
        return Ok(());
    };
    let controlled = existing
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == owner_uid);
    if !controlled {
        tracing::debug!(%kind, %namespace, %name, "not controlled by this fleet; left alone");
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(%kind, %namespace, %name, "deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("deleting {kind} {namespace}/{name}"),
            source,
        }),
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The status the controller wants the fleet to have.
///
/// `deployment` is the fleet's Deployment as last applied (its `status` is the controller-
/// manager's view of the pods), `error` a build error that stopped the reconcile. Conditions
/// keep their `lastTransitionTime` from `fleet.status` unless their status flips; `now` is the
/// time of a flip. `tenants` is left out: the reconcile counts it from its Tenant store.
pub fn fleet_status(
    fleet: &PoolerFleet,
    deployment: Option<&Deployment>,
    error: Option<&BuildError>,
    now: Time,
) -> PoolerFleetStatus {
    let generation = fleet.metadata.generation;
    let name = fleet.metadata.name.as_deref().unwrap_or_default();
    let current = fleet
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        let last_transition_time = current
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };

    if let Some(error) = error {
        return PoolerFleetStatus {
            observed_generation: generation,
            selector: Some(selector_string(name)),
            conditions: vec![
                condition(
                    CONDITION_READY,
                    "False",
                    REASON_INVALID_SPEC,
                    error.to_string(),
                ),
                condition(
                    CONDITION_AVAILABLE,
                    "Unknown",
                    REASON_INVALID_SPEC,
                    format!("the fleet's children were not updated: {error}"),
                ),
            ],
            ..PoolerFleetStatus::default()
        };
    }

    let desired = fleet.spec.replicas;
    let observed = deployment.and_then(|d| d.status.as_ref());
    let replicas = observed.and_then(|s| s.replicas).unwrap_or(0);
    let ready = observed.and_then(|s| s.ready_replicas).unwrap_or(0);
    let available = observed.and_then(|s| s.available_replicas).unwrap_or(0);
    let updated = observed.and_then(|s| s.updated_replicas).unwrap_or(0);
    let deployment_current = match (
        deployment.and_then(|d| d.metadata.generation),
        observed.and_then(|s| s.observed_generation),
    ) {
        (Some(generation), Some(seen)) => seen >= generation,
        _ => false,
    };

    let ready_condition = if desired == 0 {
        condition(
            CONDITION_READY,
            "False",
            REASON_SCALED_TO_ZERO,
            "spec.replicas is 0: no pooler runs".to_string(),
        )
    } else if ready < desired {
        condition(
            CONDITION_READY,
            "False",
            REASON_PODS_NOT_READY,
            format!("{ready} of {desired} pooler replicas are ready"),
        )
    } else if !deployment_current || updated < desired || replicas > desired {
        condition(
            CONDITION_READY,
            "False",
            REASON_ROLLOUT_IN_PROGRESS,
            format!(
                "{updated} of {desired} pooler replicas run the current pod template ({replicas} pods in all)"
            ),
        )
    } else {
        condition(
            CONDITION_READY,
            "True",
            REASON_ALL_REPLICAS_READY,
            format!("{ready} of {desired} pooler replicas are ready"),
        )
    };

    let available_condition = if desired == 0 {
        condition(
            CONDITION_AVAILABLE,
            "False",
            REASON_SCALED_TO_ZERO,
            "spec.replicas is 0: no pooler accepts clients".to_string(),
        )
    } else if available > 0 {
        condition(
            CONDITION_AVAILABLE,
            "True",
            REASON_MINIMUM_REPLICAS_AVAILABLE,
            format!("{available} pooler replicas are available"),
        )
    } else {
        condition(
            CONDITION_AVAILABLE,
            "False",
            REASON_NO_REPLICAS_AVAILABLE,
            "no pooler replica is available yet".to_string(),
        )
    };

    PoolerFleetStatus {
        observed_generation: generation,
        replicas: Some(replicas),
        ready_replicas: Some(ready),
        selector: Some(selector_string(name)),
        tenants: None,
        conditions: vec![ready_condition, available_condition],
    }
}

/// Whether writing `desired` would change what the fleet controller owns in `current`: every
/// field (`tenants` only once it is counted), and the conditions of the types it sets.
pub fn status_changed(current: Option<&PoolerFleetStatus>, desired: &PoolerFleetStatus) -> bool {
    let Some(current) = current else {
        return true;
    };
    let owned_conditions = |status: &PoolerFleetStatus| {
        let mut conditions: Vec<Condition> = status
            .conditions
            .iter()
            .filter(|c| c.type_ == CONDITION_READY || c.type_ == CONDITION_AVAILABLE)
            .cloned()
            .collect();
        conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        conditions
    };
    current.observed_generation != desired.observed_generation
        || current.replicas != desired.replicas
        || current.ready_replicas != desired.ready_replicas
        || current.selector != desired.selector
        || (desired.tenants.is_some() && current.tenants != desired.tenants)
        || owned_conditions(current) != owned_conditions(desired)
}

/// Server-side applies the fleet controller's part of the status, when it changed.
async fn write_status(
    client: &Client,
    fleet: &PoolerFleet,
    desired: PoolerFleetStatus,
) -> Result<(), Error> {
    if !status_changed(fleet.status.as_ref(), &desired) {
        return Ok(());
    }
    let (name, namespace) = (fleet.name_any(), fleet.namespace().unwrap_or_default());
    server_side_apply_status(client, fleet, &desired)
        .await
        .map_err(Error::kube(format!(
            "writing the status of PoolerFleet {namespace}/{name}"
        )))?;
    tracing::debug!(fleet = %object_key(&namespace, &name), "status updated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use pgfleet_crds::PoolerFleetSpec;

    fn fleet(replicas: i32) -> PoolerFleet {
        let mut spec: PoolerFleetSpec = serde_json::from_str("{}").expect("spec");
        spec.replicas = replicas;
        PoolerFleet {
            metadata: ObjectMeta {
                name: Some("edge".into()),
                namespace: Some("db".into()),
                uid: Some("uid-edge".into()),
                generation: Some(4),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    fn deployment_with(status: Option<DeploymentStatus>) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: None,
            status,
        }
    }

    fn t(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("timestamp"))
    }

    fn find<'a>(status: &'a PoolerFleetStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn a_deployment_without_status_is_not_ready() {
        let f = fleet(2);
        let status = fleet_status(&f, Some(&deployment_with(None)), None, t(100));
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.replicas, Some(0));
        assert_eq!(status.ready_replicas, Some(0));
        assert_eq!(
            status.selector.as_deref(),
            Some("app.kubernetes.io/instance=edge,app.kubernetes.io/name=pgfleet-pooler")
        );
        let ready = find(&status, CONDITION_READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON_PODS_NOT_READY)
        );
        assert_eq!(ready.message, "0 of 2 pooler replicas are ready");
        assert_eq!(ready.observed_generation, Some(4));
        let available = find(&status, CONDITION_AVAILABLE);
        assert_eq!(
            (available.status.as_str(), available.reason.as_str()),
            ("False", REASON_NO_REPLICAS_AVAILABLE)
        );
    }

    #[test]
    fn a_rolled_out_deployment_is_ready_and_available() {
        let f = fleet(2);
        let d = deployment_with(Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(2),
            ready_replicas: Some(2),
            available_replicas: Some(2),
            updated_replicas: Some(2),
            ..DeploymentStatus::default()
        }));
        let status = fleet_status(&f, Some(&d), None, t(100));
        assert_eq!(status.replicas, Some(2));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(find(&status, CONDITION_READY).status, "True");
        assert_eq!(find(&status, CONDITION_AVAILABLE).status, "True");

        // Old pods still running: ready enough, but not rolled out.
        let d = deployment_with(Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(3),
            ready_replicas: Some(3),
            available_replicas: Some(3),
            updated_replicas: Some(1),
            ..DeploymentStatus::default()
        }));
        let status = fleet_status(&f, Some(&d), None, t(100));
        assert_eq!(
            find(&status, CONDITION_READY).reason,
            REASON_ROLLOUT_IN_PROGRESS
        );
        assert_eq!(find(&status, CONDITION_AVAILABLE).status, "True");
    }

    #[test]
    fn an_invalid_spec_is_reported() {
        let f = fleet(2);
        let status = fleet_status(&f, None, Some(&BuildError::DuplicatePorts), t(100));
        let ready = find(&status, CONDITION_READY);
        assert_eq!(ready.reason, REASON_INVALID_SPEC);
        assert!(ready.message.contains("ports"), "{}", ready.message);
        assert_eq!(status.replicas, None);
        assert!(status.selector.is_some());
    }

    #[test]
    fn transition_times_survive_and_unchanged_status_is_not_rewritten() {
        let mut f = fleet(2);
        let first = fleet_status(&f, Some(&deployment_with(None)), None, t(100));
        assert!(status_changed(None, &first));
        f.status = Some(PoolerFleetStatus {
            tenants: Some(7),
            ..first.clone()
        });
        let second = fleet_status(&f, Some(&deployment_with(None)), None, t(200));
        assert_eq!(find(&second, CONDITION_READY).last_transition_time, t(100));
        assert!(
            !status_changed(f.status.as_ref(), &second),
            "tenants is not the fleet controller's"
        );

        // A new generation is a change; so is a flip, which takes the new time.
        f.metadata.generation = Some(5);
        let third = fleet_status(&f, Some(&deployment_with(None)), None, t(300));
        assert!(status_changed(f.status.as_ref(), &third));
        f.spec.replicas = 0;
        let fourth = fleet_status(&f, Some(&deployment_with(None)), None, t(400));
        assert_eq!(find(&fourth, CONDITION_READY).reason, REASON_SCALED_TO_ZERO);
        assert_eq!(
            find(&fourth, CONDITION_READY).last_transition_time,
            t(100),
            "still False: the transition time stays"
        );
        assert_eq!(find(&fourth, CONDITION_AVAILABLE).status, "False");
    }
}
