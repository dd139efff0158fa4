//! The PoolerFleet controller against a real kube-apiserver (testkit's control plane): it
//! creates every child with a controller owner reference to the fleet, follows spec changes,
//! puts back children deleted or edited behind its back, removes the PodDisruptionBudget of a
//! single-replica fleet, and reports the fleet's status.
//!
//! The control plane runs no controller-manager, so Deployments never get pods or status: the
//! fleet stays `Ready=False` (`PodsNotReady`), which the tests expect.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Api, Client, Resource};
use pgfleet_crds::PoolerFleet;
use pgfleet_operator::resources::selector_string;
use pgfleet_operator::{Context, FIELD_MANAGER, reconcile_fleet, run_fleet_controller_in};
use serde::de::DeserializeOwned;

use common::{admin_client as client, cp};

/// The longest any expected change may take (the controller reacts to watch events in
/// milliseconds).
const WAIT: Duration = Duration::from_secs(20);
/// Pause between two looks at the API server while waiting.
const POLL: Duration = Duration::from_millis(100);
/// The operator's default pooler image in these tests.
const IMAGE: &str = "registry.invalid/pgfleet-pooler:test";
/// The fleet's name in every test (each test has its own namespace).
const FLEET: &str = "edge";

/// `kubectl` as the admin, without stalling the runtime's other tasks.
fn kubectl(args: &[&str]) -> String {
    tokio::task::block_in_place(|| cp().kubectl(args))
}

fn apply_yaml(yaml: &str) {
    tokio::task::block_in_place(|| cp().apply_yaml(yaml));
}

/// A namespace unique in this run, created on the shared control plane.
fn fresh_namespace() -> String {
    tokio::task::block_in_place(|| common::fresh_namespace("pgf-ctl"))
}

/// The controller, running in a task for as long as this value lives.
struct RunningController(tokio::task::JoinHandle<()>);

impl Drop for RunningController {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_controller(client: &Client, namespace: &str) -> RunningController {
    let ctx = Arc::new(Context::new(client.clone(), IMAGE));
    let client = client.clone();
    let namespace = namespace.to_string();
    RunningController(tokio::spawn(async move {
        run_fleet_controller_in(client, ctx, &namespace).await;
    }))
}

/// Polls `probe` until it returns `Some`, for at most [`WAIT`]; panics naming `what`.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {} s waiting for {what}", WAIT.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn api<K>(client: &Client, namespace: &str) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(client.clone(), namespace)
}

/// Waits until `namespace/name` exists and satisfies `check`, and returns it.
async fn wait_for<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&K) -> bool,
) -> K
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api = api::<K>(client, namespace);
    let description = format!("{} {namespace}/{name}: {what}", K::kind(&()));
    eventually(&description, async || {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .filter(|obj| check(obj))
    })
    .await
}

/// Waits until `namespace/name` does not exist.
async fn wait_gone<K>(client: &Client, namespace: &str, name: &str)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api = api::<K>(client, namespace);
    let description = format!("{} {namespace}/{name} to be deleted", K::kind(&()));
    eventually(&description, async || {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

fn create_fleet(namespace: &str, replicas: i32) -> String {
    apply_yaml(&format!(
        "apiVersion: pgfleet.io/v1alpha1\nkind: PoolerFleet\nmetadata:\n  name: {FLEET}\n  \
         namespace: {namespace}\nspec:\n  replicas: {replicas}\n"
    ));
    kubectl(&[
        "get",
        "poolerfleet",
        FLEET,
        "-n",
        namespace,
        "-o",
        "jsonpath={.metadata.uid}",
    ])
}

fn set_replicas(namespace: &str, replicas: i32) {
    kubectl(&[
        "patch",
        "poolerfleet",
        FLEET,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        &format!("{{\"spec\":{{\"replicas\":{replicas}}}}}"),
    ]);
}

fn owned_by(meta: &ObjectMeta, fleet_uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| {
        o.uid == fleet_uid
            && o.kind == "PoolerFleet"
            && o.api_version == "pgfleet.io/v1alpha1"
            && o.name == FLEET
            && o.controller == Some(true)
    })
}

fn assert_owned<K: Resource<DynamicType = ()>>(obj: &K, fleet_uid: &str) {
    assert!(
        owned_by(obj.meta(), fleet_uid),
        "{} {:?} must have a controller owner reference to the fleet ({fleet_uid}): {:?}",
        K::kind(&()),
        obj.meta().name,
        obj.meta().owner_references
    );
}

fn replicas_of(deployment: &Deployment) -> Option<i32> {
    deployment.spec.as_ref().and_then(|s| s.replicas)
}

fn image_of(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_every_child_owned_by_the_fleet_and_reports_status() {
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    let uid = create_fleet(&ns, 2);
    let pooler = format!("{FLEET}-pooler");

    let sa: ServiceAccount = wait_for(&client, &ns, &pooler, "exists", |_| true).await;
    assert_owned(&sa, &uid);
    let role: Role = wait_for(&client, &ns, &pooler, "exists", |_| true).await;
    assert_owned(&role, &uid);
    let binding: RoleBinding = wait_for(&client, &ns, &pooler, "exists", |_| true).await;
    assert_owned(&binding, &uid);
    assert_eq!(binding.role_ref.name, pooler);
    let deployment: Deployment = wait_for(&client, &ns, FLEET, "exists", |_| true).await;
    assert_owned(&deployment, &uid);
    assert_eq!(replicas_of(&deployment), Some(2));
    assert_eq!(image_of(&deployment).as_deref(), Some(IMAGE));
    let service: Service = wait_for(&client, &ns, FLEET, "exists", |_| true).await;
    assert_owned(&service, &uid);
    let pdb: PodDisruptionBudget = wait_for(&client, &ns, FLEET, "exists", |_| true).await;
    assert_owned(&pdb, &uid);
    assert_eq!(
        pdb.spec.as_ref().and_then(|s| s.min_available.clone()),
        Some(IntOrString::Int(1))
    );

    // Every child is applied by the operator's field manager.
    for managed in [
        &sa.metadata,
        &role.metadata,
        &binding.metadata,
        &deployment.metadata,
        &service.metadata,
        &pdb.metadata,
    ] {
        assert!(
            managed
                .managed_fields
                .iter()
                .flatten()
                .any(|f| f.manager.as_deref() == Some(FIELD_MANAGER)
                    && f.operation.as_deref() == Some("Apply")),
            "{:?} is not applied by {FIELD_MANAGER}: {:?}",
            managed.name,
            managed.managed_fields
        );
    }

    // Status: no pods ever run here, so the fleet is not ready, but everything else is set.
    let selector = selector_string(FLEET);
    let fleet: PoolerFleet = wait_for(&client, &ns, FLEET, "status written", |f: &PoolerFleet| {
        f.status.as_ref().is_some_and(|s| {
            s.observed_generation.is_some() && s.observed_generation == f.metadata.generation
        })
    })
    .await;
    let status = fleet.status.as_ref().expect("status");
    assert_eq!(status.selector.as_deref(), Some(selector.as_str()));
    assert_eq!(status.replicas, Some(0));
    assert_eq!(status.ready_replicas, Some(0));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "PodsNotReady");
    assert_eq!(ready.message, "0 of 2 pooler replicas are ready");
    let available = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("Available condition");
    assert_eq!(available.status, "False");
    assert!(
        fleet.metadata.managed_fields.iter().flatten().any(|f| {
            f.manager.as_deref() == Some(FIELD_MANAGER)
                && f.operation.as_deref() == Some("Apply")
                && f.subresource.as_deref() == Some("status")
        }),
        "status is applied by {FIELD_MANAGER}: {:?}",
        fleet.metadata.managed_fields
    );

    // The scale subresource reads the selector from status.
    let scale = kubectl(&[
        "get",
        "--raw",
        &format!("/apis/pgfleet.io/v1alpha1/namespaces/{ns}/poolerfleets/{FLEET}/scale"),
    ]);
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("scale JSON");
    assert_eq!(scale["status"]["selector"], selector.as_str());
    assert_eq!(scale["spec"]["replicas"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_replica_changes_and_drops_the_budget_of_a_single_replica() {
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    let uid = create_fleet(&ns, 2);
    let _: PodDisruptionBudget = wait_for(&client, &ns, FLEET, "exists", |_| true).await;

    set_replicas(&ns, 3);
    let deployment: Deployment = wait_for(&client, &ns, FLEET, "replicas 3", |d: &Deployment| {
        replicas_of(d) == Some(3)
    })
    .await;
    assert_owned(&deployment, &uid);
    let _: PodDisruptionBudget = wait_for(&client, &ns, FLEET, "still exists", |_| true).await;
    let fleet: PoolerFleet = wait_for(
        &client,
        &ns,
        FLEET,
        "generation 2 observed",
        |f: &PoolerFleet| {
            f.metadata.generation == Some(2)
                && f.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
        },
    )
    .await;
    let ready = &fleet.status.as_ref().expect("status").conditions;
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.message == "0 of 3 pooler replicas are ready"),
        "{ready:?}"
    );

    set_replicas(&ns, 1);
    wait_gone::<PodDisruptionBudget>(&client, &ns, FLEET).await;
    let _: Deployment = wait_for(&client, &ns, FLEET, "replicas 1", |d: &Deployment| {
        replicas_of(d) == Some(1)
    })
    .await;
    let _: PoolerFleet = wait_for(
        &client,
        &ns,
        FLEET,
        "generation 3 observed",
        |f: &PoolerFleet| f.status.as_ref().and_then(|s| s.observed_generation) == Some(3),
    )
    .await;

    // Back to two: the budget returns.
    set_replicas(&ns, 2);
    let pdb: PodDisruptionBudget = wait_for(&client, &ns, FLEET, "recreated", |_| true).await;
    assert_owned(&pdb, &uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_children_deleted_or_edited_behind_its_back() {
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    let uid = create_fleet(&ns, 2);

    // A deleted Service comes back (as a new object).
    let service: Service = wait_for(&client, &ns, FLEET, "exists", |_| true).await;
    let old_uid = service.metadata.uid.clone().expect("service uid");
    kubectl(&["delete", "service", FLEET, "-n", &ns, "--wait=false"]);
    let service: Service = wait_for(&client, &ns, FLEET, "recreated", |s: &Service| {
        s.metadata.uid.as_deref() != Some(old_uid.as_str())
    })
    .await;
    assert_owned(&service, &uid);

    // An edit to a field the operator owns is reverted.
    let _: Deployment = wait_for(&client, &ns, FLEET, "exists", |_| true).await;
    let patched = kubectl(&[
        "patch",
        "deployment",
        FLEET,
        "-n",
        &ns,
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"registry.invalid/someone-else:1"}]"#,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(patched, "registry.invalid/someone-else:1");
    let deployment: Deployment =
        wait_for(&client, &ns, FLEET, "image restored", |d: &Deployment| {
            image_of(d).as_deref() == Some(IMAGE)
        })
        .await;
    assert_owned(&deployment, &uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_reconcile_of_an_unchanged_fleet_changes_nothing() {
    // No controller runs here: reconcile_fleet is called directly, so every write is its own.
    // The API server ignores an apply that changes nothing, so this shows the controller
    // converges (condition transition times are kept, children are stable), which is what
    // stops its own writes from re-triggering it; that it skips the status request altogether
    // is covered by the unit tests of `status_changed`.
    let client = client().await;
    let ns = fresh_namespace();
    create_fleet(&ns, 2);
    let ctx = Arc::new(Context::new(client.clone(), IMAGE));
    let fleets = api::<PoolerFleet>(&client, &ns);

    let fleet = fleets.get(FLEET).await.expect("fleet");
    assert!(fleet.status.is_none());
    reconcile_fleet(Arc::new(fleet), ctx.clone())
        .await
        .expect("first reconcile");
    let fleet = fleets.get(FLEET).await.expect("fleet");
    let status = fleet
        .status
        .clone()
        .expect("status written by the first reconcile");
    assert_eq!(status.observed_generation, fleet.metadata.generation);

    let versions = async || {
        let deployment = api::<Deployment>(&client, &ns)
            .get(FLEET)
            .await
            .expect("deployment");
        let service = api::<Service>(&client, &ns)
            .get(FLEET)
            .await
            .expect("service");
        let pdb = api::<PodDisruptionBudget>(&client, &ns)
            .get(FLEET)
            .await
            .expect("pdb");
        [
            deployment.metadata.resource_version,
            service.metadata.resource_version,
            pdb.metadata.resource_version,
        ]
    };
    let children_before = versions().await;
    reconcile_fleet(Arc::new(fleet.clone()), ctx.clone())
        .await
        .expect("second reconcile");
    let after = fleets.get(FLEET).await.expect("fleet");
    assert_eq!(
        after.metadata.resource_version, fleet.metadata.resource_version,
        "an unchanged status must stay as it is (no new transition times)"
    );
    assert_eq!(after.status, Some(status));
    assert_eq!(
        versions().await,
        children_before,
        "re-applying unchanged children must not change them"
    );
    assert_eq!(ctx.failures(&ns, FLEET), 0);
}

/// The `(reason, type)` of every operator event about the fleet, oldest first.
async fn fleet_events(client: &Client, namespace: &str) -> Vec<(String, String)> {
    use k8s_openapi::api::events::v1::Event;
    let mut events: Vec<Event> = api::<Event>(client, namespace)
        .list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("PoolerFleet")
                && e.reporting_controller.as_deref() == Some("pgfleet-operator")
        })
        .collect();
    events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    events
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.type_.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_people_what_changed_with_events() {
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_fleet(&ns, 1);
    let reconciled = ("Reconciled".to_string(), "Normal".to_string());
    eventually("a Reconciled event", async || {
        fleet_events(&client, &ns)
            .await
            .contains(&reconciled)
            .then_some(())
    })
    .await;

    // The test plays the controller-manager (there is none here): it writes the Deployment's
    // status as the Deployment controller would, first with the pod ready, then with it gone.
    let deployment: Deployment = wait_for(&client, &ns, FLEET, "exists", |_| true).await;
    let generation = deployment.metadata.generation.expect("generation");
    let set_ready = |ready: i32| {
        kubectl(&[
            "patch",
            "deployment",
            FLEET,
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(
                "{{\"status\":{{\"observedGeneration\":{generation},\"replicas\":1,\
                 \"readyReplicas\":{ready},\"availableReplicas\":{ready},\"updatedReplicas\":1}}}}"
            ),
        ])
    };
    set_ready(1);
    let ready = ("AllReplicasReady".to_string(), "Normal".to_string());
    let available = ("Available".to_string(), "Normal".to_string());
    eventually("AllReplicasReady and Available events", async || {
        let events = fleet_events(&client, &ns).await;
        (events.contains(&ready) && events.contains(&available)).then_some(())
    })
    .await;
    set_ready(0);
    let not_ready = ("PodsNotReady".to_string(), "Warning".to_string());
    let unavailable = ("Unavailable".to_string(), "Warning".to_string());
    eventually("PodsNotReady and Unavailable warnings", async || {
        let events = fleet_events(&client, &ns).await;
        (events.contains(&not_ready) && events.contains(&unavailable)).then_some(())
    })
    .await;
    // A settled fleet says nothing more: a second spell of the same state (and the reconciles
    // the controller's own writes trigger) adds no event.
    set_ready(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut events = fleet_events(&client, &ns).await;
    events.sort();
    let mut want = vec![reconciled, ready, available, not_ready, unavailable];
    want.sort();
    assert_eq!(events, want, "one event per change");
}

/// Whether the fleet's pooler ServiceAccount may do `verb` on `resource` (`group/resource` or
/// a core resource) in `namespace` (empty: cluster-scoped), as the API server's RBAC answers
/// a SubjectAccessReview for it.
async fn pooler_can(
    client: &Client,
    sa_namespace: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let (group, resource) = match resource.split_once('.') {
        Some((resource, group)) => (group, resource),
        None => ("", resource),
    };
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub.to_string())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!(
                "system:serviceaccount:{sa_namespace}:{FLEET}-pooler"
            )),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{sa_namespace}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                verb: Some(verb.into()),
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&Default::default(), &review)
        .await
        .unwrap_or_else(|e| panic!("SubjectAccessReview for {verb} {resource}: {e}"));
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poolers_service_account_reads_its_secrets_and_nothing_else() {
    let client = client().await;
    let ns = fresh_namespace();
    let other = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_fleet(&ns, 1);
    let _: RoleBinding =
        wait_for(&client, &ns, &format!("{FLEET}-pooler"), "exists", |_| true).await;
    // What the Kubernetes tenant source does: list, watch and get Secrets in its namespace.
    for verb in ["list", "watch", "get"] {
        assert!(
            pooler_can(&client, &ns, verb, "secrets", &ns).await,
            "the pooler may {verb} secrets"
        );
    }
    // Nothing else: no writes, no other resources, no other namespace.
    for (verb, resource, namespace) in [
        ("create", "secrets", ns.as_str()),
        ("update", "secrets", ns.as_str()),
        ("patch", "secrets", ns.as_str()),
        ("delete", "secrets", ns.as_str()),
        ("list", "secrets", other.as_str()),
        ("get", "secrets", other.as_str()),
        ("list", "configmaps", ns.as_str()),
        ("list", "pods", ns.as_str()),
        ("list", "tenants.pgfleet.io", ns.as_str()),
        ("list", "poolerfleets.pgfleet.io", ns.as_str()),
        ("create", "pods/exec", ns.as_str()),
        ("list", "nodes", ""),
    ] {
        assert!(
            !pooler_can(&client, &ns, verb, resource, namespace).await,
            "the pooler must not {verb} {resource} in namespace {namespace:?}"
        );
    }
}
