//! The Tenant controller against a real kube-apiserver (testkit's control plane): documents
//! rendered into the fleet's namespace, status and events, Secrets, fleets and other Tenants
//! waking a Tenant up, documents put back and removed, the finalizer released.
//!
//! Each test runs in fresh namespaces with its own controller scoped to one namespace, except
//! the cross-namespace test, which needs the all-namespaces controller and so runs alone (an
//! exclusive lock) to not reconcile the other tests' Tenants alongside their own controllers.
//!
//! The control plane runs no controller-manager: fleets have no pods, so their `Available`
//! condition is never True unless a test runs the fleet controller and writes the
//! Deployment's status the way the controller-manager would (see
//! `ready_follows_the_fleets_availability`).

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use pgfleet_crds::{Tenant, TenantDocument};
use pgfleet_operator::resources::tenant_document_secret_name;
use pgfleet_operator::tenant_controller::{
    self, FINALIZER, run_tenant_controller, run_tenant_controller_in,
};
use serde::de::DeserializeOwned;
use tokio::sync::RwLock;

use common::{admin_client as client, cp};

/// The longest any expected change may take (the controller reacts to watch events in
/// milliseconds; this is far below its 5-minute resync, so a pass proves a watch fired).
const WAIT: Duration = Duration::from_secs(20);
/// Pause between two looks at the API server while waiting.
const POLL: Duration = Duration::from_millis(100);
/// The fleet's name in every test.
const FLEET: &str = "edge";
/// Image for the fleet controller (only `ready_follows_the_fleets_availability` runs it).
const IMAGE: &str = "registry.invalid/pgfleet-pooler:test";

/// Namespaced tests share it; the all-namespaces test takes it alone.
static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

/// `kubectl` as the admin, without stalling the runtime's other tasks.
fn kubectl(args: &[&str]) -> String {
    tokio::task::block_in_place(|| cp().kubectl(args))
}

fn apply_yaml(yaml: &str) {
    tokio::task::block_in_place(|| cp().apply_yaml(yaml));
}

/// A namespace unique in this run, created on the shared control plane.
fn fresh_namespace() -> String {
    tokio::task::block_in_place(|| common::fresh_namespace("pgt-ctl"))
}

/// A controller running in a task for as long as this value lives.
struct Running(tokio::task::JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_controller(client: &Client, namespace: &str) -> Running {
    let ctx = Arc::new(tenant_controller::Context::new(client.clone()));
    let client = client.clone();
    let namespace = namespace.to_string();
    Running(tokio::spawn(async move {
        run_tenant_controller_in(client, ctx, &namespace).await;
    }))
}

/// Polls `probe` until it returns `Some`, for at most [`WAIT`]; panics naming `what` and the
/// last thing seen.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!(
                    "timed out after {} s waiting for {what}; last seen: {last}",
                    WAIT.as_secs()
                )
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
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
    eventually(&description, async || match api.get_opt(name).await {
        Ok(Some(obj)) if check(&obj) => Ok(obj),
        Ok(Some(obj)) => Err(summary(&obj)),
        Ok(None) => Err("not found".into()),
        Err(e) => Err(e.to_string()),
    })
    .await
}

/// What a failure message shows of an object: a Tenant's status, else the whole object.
fn summary<K: Debug>(obj: &K) -> String {
    let text = format!("{obj:?}");
    match text.find("status:") {
        Some(i) => text[i..].to_string(),
        None => text,
    }
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
    eventually(&description, async || match api.get_opt(name).await {
        Ok(None) => Ok(()),
        Ok(Some(obj)) => Err(format!("still there: {:?}", obj.meta().deletion_timestamp)),
        Err(e) => Err(e.to_string()),
    })
    .await;
}

fn create_fleet(namespace: &str, spec: &str) {
    apply_yaml(&format!(
        "apiVersion: pgfleet.io/v1alpha1\nkind: PoolerFleet\nmetadata:\n  name: {FLEET}\n  \
         namespace: {namespace}\nspec:\n{}",
        indent(spec)
    ));
}

fn create_secret(namespace: &str, name: &str, data: &[(&str, &str)]) {
    let data: String = data
        .iter()
        .map(|(k, v)| format!("  {k}: {v:?}\n"))
        .collect();
    apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
         stringData:\n{data}"
    ));
}

fn create_tenant(namespace: &str, name: &str, spec: &str) {
    apply_yaml(&format!(
        "apiVersion: pgfleet.io/v1alpha1\nkind: Tenant\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\nspec:\n{}",
        indent(spec)
    ));
}

fn indent(yaml: &str) -> String {
    yaml.lines().map(|l| format!("  {l}\n")).collect()
}

/// A spec with one user whose password is key `password` of Secret `app-pw`.
const ONE_USER: &str = "upstream: {host: db.internal, database: app}\n\
                        users: [{name: app, passwordSecretRef: {name: app-pw, key: password}}]\n";

/// The condition `type_` of a Tenant as (status, reason, message).
fn condition(tenant: &Tenant, type_: &str) -> Option<(String, String, String)> {
    tenant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn is_accepted(tenant: &Tenant) -> bool {
    condition(tenant, "Accepted").is_some_and(|(s, _, _)| s == "True")
}

fn rejected_for(reason: &str) -> impl Fn(&Tenant) -> bool + '_ {
    move |tenant| condition(tenant, "Accepted").is_some_and(|(s, r, _)| s == "False" && r == reason)
}

/// The tenant document of Tenant `namespace/name`, as stored in `fleet_namespace`.
async fn wait_document(
    client: &Client,
    fleet_namespace: &str,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&TenantDocument) -> bool,
) -> (Secret, TenantDocument) {
    let secret_name = tenant_document_secret_name(namespace, name);
    let secret: Secret = wait_for(client, fleet_namespace, &secret_name, what, |s: &Secret| {
        document_of(s).is_some_and(|d| check(&d))
    })
    .await;
    let document = document_of(&secret).expect("document");
    (secret, document)
}

fn document_of(secret: &Secret) -> Option<TenantDocument> {
    let bytes = secret.data.as_ref()?.get("tenant.yaml")?;
    TenantDocument::parse(std::str::from_utf8(&bytes.0).ok()?).ok()
}

async fn wait_document_gone(client: &Client, fleet_namespace: &str, namespace: &str, name: &str) {
    wait_gone::<Secret>(
        client,
        fleet_namespace,
        &tenant_document_secret_name(namespace, name),
    )
    .await;
}

/// Waits for an event about Tenant `name` with `reason`, from the operator.
async fn wait_event(client: &Client, namespace: &str, name: &str, reason: &str) -> Event {
    let events = api::<Event>(client, namespace);
    let what = format!("a {reason} event about Tenant {namespace}/{name}");
    eventually(&what, async || {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let seen: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| format!("{:?}", e.reason))
            .collect();
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.reporting_controller.as_deref() == Some("pgfleet-operator")
            })
            .ok_or_else(|| format!("events: {seen:?}"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_an_accepted_tenant_into_its_fleets_namespace() {
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_fleet(&ns, "replicas: 2");
    create_secret(&ns, "app-pw", &[("password", "app-secret")]);
    create_secret(&ns, "report-pw", &[("pw", "report-secret")]);
    create_tenant(
        &ns,
        "acme",
        "fleetRef: {name: edge}\nupstream: {host: db.internal, port: 6432, database: app}\n\
         defaultPoolSize: 20\ndefaultMaxClients: 100\nmode: session\n\
         users:\n- {name: app, passwordSecretRef: {name: app-pw, key: password}, poolSize: 10}\n\
         - {name: report, passwordSecretRef: {name: report-pw, key: pw}}\n",
    );

    let (secret, doc) = wait_document(&client, &ns, &ns, "acme", "rendered", |_| true).await;
    let labels = secret.metadata.labels.clone().expect("labels");
    assert_eq!(labels["pgfleet.io/fleet"], FLEET);
    assert_eq!(labels["pgfleet.io/tenant"], "acme");
    assert_eq!(labels["pgfleet.io/tenant-namespace"], ns);
    assert_eq!(doc.external_id, "acme");
    assert_eq!(doc.upstream.host, "db.internal");
    assert_eq!(doc.upstream.port, 6432);
    assert_eq!(doc.mode, pgfleet_crds::PoolMode::Session);
    assert_eq!(doc.user("app").expect("app").password, "app-secret");
    assert_eq!(
        doc.user("report").expect("report").password,
        "report-secret"
    );
    // Fleet-wide budgets split across the fleet's two replicas.
    assert_eq!(doc.default_pool_size, 10);
    assert_eq!(doc.default_max_clients, 50);
    assert_eq!(doc.user("app").and_then(|u| u.pool_size), Some(5));

    let tenant: Tenant = wait_for(&client, &ns, "acme", "accepted", |t: &Tenant| {
        is_accepted(t)
            && t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
    })
    .await;
    let status = tenant.status.as_ref().expect("status");
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("postgresql://<user>.acme@{FLEET}.{ns}.svc:6543/app").as_str())
    );
    assert_eq!(
        status.fleet.as_deref(),
        Some(format!("{ns}/{FLEET}").as_str())
    );
    let (ready, reason, message) = condition(&tenant, "Ready").expect("Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "FleetNotAvailable"),
        "no controller-manager, no pods: {message}"
    );
    assert!(
        tenant
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER),
        "{:?}",
        tenant.metadata.finalizers
    );
    assert!(
        tenant.metadata.managed_fields.iter().flatten().any(|f| {
            f.manager.as_deref() == Some(pgfleet_operator::FIELD_MANAGER)
                && f.subresource.as_deref() == Some("status")
        }),
        "status is applied by the operator"
    );
    let accepted = wait_event(&client, &ns, "acme", "Accepted").await;
    assert_eq!(accepted.type_.as_deref(), Some("Normal"));
    let rendered = wait_event(&client, &ns, "acme", "Rendered").await;
    assert!(
        rendered
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("2 replica"),
        "{:?}",
        rendered.note
    );

    // Settled: the controller's own writes (finalizer, status, document) re-trigger it, but
    // nothing changes any more, so no further events appear.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = api::<Event>(&client, &ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    let about_acme: Vec<(Option<String>, Option<i32>)> = events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("acme"))
        .map(|e| (e.reason.clone(), e.series.as_ref().map(|s| s.count)))
        .collect();
    let count = |reason: &str| {
        about_acme
            .iter()
            .filter(|(r, series)| r.as_deref() == Some(reason) && series.is_none())
            .count()
    };
    assert_eq!(
        (
            count("Accepted"),
            count("Rendered"),
            count("FleetNotAvailable")
        ),
        (1, 1, 1),
        "one event per state change, never repeated: {about_acme:?}"
    );
    assert_eq!(about_acme.len(), 3, "{about_acme:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_password_secret_is_reported_until_it_is_created() {
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_fleet(&ns, "replicas: 1");
    create_tenant(
        &ns,
        "acme",
        &format!("fleetRef: {{name: edge}}\n{ONE_USER}"),
    );

    let tenant: Tenant = wait_for(
        &client,
        &ns,
        "acme",
        "SecretNotFound",
        rejected_for("SecretNotFound"),
    )
    .await;
    let (_, _, message) = condition(&tenant, "Accepted").expect("Accepted");
    assert!(message.contains(&format!("{ns}/app-pw")), "{message}");
    assert!(
        message.contains("spec.users[0].passwordSecretRef"),
        "{message}"
    );
    assert_eq!(
        condition(&tenant, "Ready").map(|(s, r, _)| (s, r)),
        Some(("False".into(), "NotAccepted".into()))
    );
    assert_eq!(
        tenant.status.as_ref().and_then(|s| s.endpoint.clone()),
        None
    );
    let warning = wait_event(&client, &ns, "acme", "SecretNotFound").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    // The Secret appears: the Secret watch wakes the Tenant up.
    create_secret(&ns, "app-pw", &[("password", "s3cret")]);
    let (_, doc) = wait_document(&client, &ns, &ns, "acme", "rendered", |_| true).await;
    assert_eq!(doc.user("app").expect("app").password, "s3cret");
    wait_for(&client, &ns, "acme", "accepted", is_accepted).await;

    // Deleting it again stops the tenant: not accepted, document removed.
    kubectl(&["delete", "secret", "app-pw", "-n", &ns]);
    wait_for(
        &client,
        &ns,
        "acme",
        "SecretNotFound again",
        rejected_for("SecretNotFound"),
    )
    .await;
    wait_document_gone(&client, &ns, &ns, "acme").await;
    wait_event(&client, &ns, "acme", "DocumentDeleted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_is_reported() {
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_fleet(&ns, "replicas: 1");
    create_secret(&ns, "app-pw", &[("pass", "typo")]);
    create_tenant(
        &ns,
        "acme",
        &format!("fleetRef: {{name: edge}}\n{ONE_USER}"),
    );

    let tenant: Tenant = wait_for(
        &client,
        &ns,
        "acme",
        "SecretKeyNotFound",
        rejected_for("SecretKeyNotFound"),
    )
    .await;
    let (_, _, message) = condition(&tenant, "Accepted").expect("Accepted");
    assert!(
        message.contains(&format!("{ns}/app-pw")) && message.contains("\"password\""),
        "{message}"
    );

    // The key is added: accepted.
    create_secret(&ns, "app-pw", &[("pass", "typo"), ("password", "fixed")]);
    let (_, doc) = wait_document(&client, &ns, &ns, "acme", "rendered", |_| true).await;
    assert_eq!(doc.user("app").expect("app").password, "fixed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_password_re_renders_the_document() {
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_fleet(&ns, "replicas: 1");
    create_secret(&ns, "app-pw", &[("password", "old-password")]);
    create_tenant(
        &ns,
        "acme",
        &format!("fleetRef: {{name: edge}}\n{ONE_USER}"),
    );
    wait_document(&client, &ns, &ns, "acme", "old password", |d| {
        d.user("app").is_some_and(|u| u.password == "old-password")
    })
    .await;

    create_secret(&ns, "app-pw", &[("password", "new-password")]);
    wait_document(&client, &ns, &ns, "acme", "new password", |d| {
        d.user("app").is_some_and(|u| u.password == "new-password")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_fleet_is_reported_until_it_is_created() {
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_secret(&ns, "app-pw", &[("password", "pw")]);
    create_tenant(
        &ns,
        "acme",
        &format!("fleetRef: {{name: edge}}\n{ONE_USER}"),
    );

    let tenant: Tenant = wait_for(
        &client,
        &ns,
        "acme",
        "FleetNotFound",
        rejected_for("FleetNotFound"),
    )
    .await;
    let (_, _, message) = condition(&tenant, "Accepted").expect("Accepted");
    assert!(message.contains(&format!("{ns}/{FLEET}")), "{message}");
    wait_event(&client, &ns, "acme", "FleetNotFound").await;

    create_fleet(&ns, "replicas: 1");
    wait_for(&client, &ns, "acme", "accepted", is_accepted).await;
    wait_document(&client, &ns, &ns, "acme", "rendered", |_| true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_in_another_namespace_must_admit_the_tenant() {
    // The all-namespaces controller: alone, so it does not reconcile the other tests'
    // Tenants alongside their own controllers.
    let _exclusive = EXCLUSIVE.write().await;
    let client = client().await;
    let tenants_ns = fresh_namespace();
    let fleet_ns = fresh_namespace();
    let ctx = Arc::new(tenant_controller::Context::new(client.clone()));
    let _controller = Running(tokio::spawn(run_tenant_controller(client.clone(), ctx)));
    create_fleet(&fleet_ns, "replicas: 1");
    create_secret(&tenants_ns, "app-pw", &[("password", "pw")]);
    create_tenant(
        &tenants_ns,
        "acme",
        &format!("fleetRef: {{name: edge, namespace: {fleet_ns}}}\n{ONE_USER}"),
    );

    let tenant: Tenant = wait_for(
        &client,
        &tenants_ns,
        "acme",
        "NamespaceNotAllowed",
        rejected_for("NamespaceNotAllowed"),
    )
    .await;
    let (_, _, message) = condition(&tenant, "Accepted").expect("Accepted");
    assert!(
        message.contains(&format!("{fleet_ns}/{FLEET}")) && message.contains(&tenants_ns),
        "{message}"
    );

    // The fleet opens up: accepted, and the document lands in the fleet's namespace.
    kubectl(&[
        "patch",
        "poolerfleet",
        FLEET,
        "-n",
        &fleet_ns,
        "--type=merge",
        "-p",
        &format!("{{\"spec\":{{\"allowedTenantNamespaces\":[\"{tenants_ns}\"]}}}}"),
    ]);
    let (secret, doc) = wait_document(&client, &fleet_ns, &tenants_ns, "acme", "rendered", |_| {
        true
    })
    .await;
    assert_eq!(doc.external_id, "acme");
    assert_eq!(
        secret.metadata.labels.expect("labels")["pgfleet.io/tenant-namespace"],
        tenants_ns
    );
    let tenant: Tenant = wait_for(&client, &tenants_ns, "acme", "accepted", is_accepted).await;
    assert_eq!(
        tenant.status.and_then(|s| s.endpoint).as_deref(),
        Some(format!("postgresql://<user>.acme@{FLEET}.{fleet_ns}.svc:6543/app").as_str())
    );
    assert!(
        api::<Secret>(&client, &tenants_ns)
            .get_opt(&tenant_document_secret_name(&tenants_ns, "acme"))
            .await
            .expect("get")
            .is_none(),
        "no document in the Tenant's own namespace"
    );

    // Closed again: the document goes away.
    kubectl(&[
        "patch",
        "poolerfleet",
        FLEET,
        "-n",
        &fleet_ns,
        "--type=merge",
        "-p",
        "{\"spec\":{\"allowedTenantNamespaces\":null}}",
    ]);
    wait_for(
        &client,
        &tenants_ns,
        "acme",
        "NamespaceNotAllowed again",
        rejected_for("NamespaceNotAllowed"),
    )
    .await;
    wait_document_gone(&client, &fleet_ns, &tenants_ns, "acme").await;

    // Deleting the Tenant releases the finalizer across namespaces too.
    kubectl(&[
        "delete",
        "tenant",
        "acme",
        "-n",
        &tenants_ns,
        "--wait=false",
    ]);
    wait_gone::<Tenant>(&client, &tenants_ns, "acme").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_external_id_goes_to_the_older_tenant() {
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_fleet(&ns, "replicas: 1");
    create_secret(&ns, "app-pw", &[("password", "pw")]);
    let spec = format!("externalId: acme\nfleetRef: {{name: edge}}\n{ONE_USER}");
    create_tenant(&ns, "first", &spec);
    wait_document(&client, &ns, &ns, "first", "rendered", |_| true).await;
    // creationTimestamp has one-second resolution: make sure the second one is younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_tenant(&ns, "second", &spec);

    let second: Tenant = wait_for(
        &client,
        &ns,
        "second",
        "ExternalIdConflict",
        rejected_for("ExternalIdConflict"),
    )
    .await;
    let (_, _, message) = condition(&second, "Accepted").expect("Accepted");
    assert!(
        message.contains(&format!("{ns}/first")) && message.contains("\"acme\""),
        "{message}"
    );
    wait_event(&client, &ns, "second", "ExternalIdConflict").await;
    let first: Tenant = wait_for(&client, &ns, "first", "accepted", is_accepted).await;
    assert!(is_accepted(&first));
    assert!(
        api::<Secret>(&client, &ns)
            .get_opt(&tenant_document_secret_name(&ns, "second"))
            .await
            .expect("get")
            .is_none(),
        "the loser has no document"
    );

    // The holder goes away: the other claimant takes over.
    kubectl(&["delete", "tenant", "first", "-n", &ns, "--wait=false"]);
    wait_gone::<Tenant>(&client, &ns, "first").await;
    wait_document_gone(&client, &ns, &ns, "first").await;
    wait_for(&client, &ns, "second", "accepted", is_accepted).await;
    let (_, doc) = wait_document(&client, &ns, &ns, "second", "rendered", |_| true).await;
    assert_eq!(doc.external_id, "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_the_fleet_re_splits_the_budgets() {
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_fleet(&ns, "replicas: 1");
    create_secret(&ns, "app-pw", &[("password", "pw")]);
    create_tenant(
        &ns,
        "acme",
        &format!(
            "fleetRef: {{name: edge}}\ndefaultPoolSize: 10\ndefaultMaxClients: 100\n{ONE_USER}"
        ),
    );
    wait_document(&client, &ns, &ns, "acme", "one replica's share", |d| {
        d.default_pool_size == 10 && d.default_max_clients == 100
    })
    .await;

    kubectl(&["scale", "poolerfleet", FLEET, "-n", &ns, "--replicas=2"]);
    wait_document(&client, &ns, &ns, "acme", "two replicas' share", |d| {
        d.default_pool_size == 5 && d.default_max_clients == 50
    })
    .await;

    kubectl(&["scale", "poolerfleet", FLEET, "-n", &ns, "--replicas=3"]);
    wait_document(&client, &ns, &ns, "acme", "three replicas' share", |d| {
        d.default_pool_size == 3 && d.default_max_clients == 33
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_restored_and_removed_with_the_tenant() {
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_fleet(&ns, "replicas: 1");
    create_secret(&ns, "app-pw", &[("password", "pw")]);
    create_tenant(
        &ns,
        "acme",
        &format!("fleetRef: {{name: edge}}\n{ONE_USER}"),
    );
    let name = tenant_document_secret_name(&ns, "acme");
    let (secret, _) = wait_document(&client, &ns, &ns, "acme", "rendered", |_| true).await;
    let old_uid = secret.metadata.uid.clone().expect("uid");

    // Deleted behind the operator's back: put back (a new object).
    kubectl(&["delete", "secret", &name, "-n", &ns]);
    let restored: Secret = wait_for(&client, &ns, &name, "recreated", |s: &Secret| {
        s.metadata.uid.as_deref() != Some(old_uid.as_str()) && document_of(s).is_some()
    })
    .await;
    assert_eq!(
        document_of(&restored)
            .expect("doc")
            .user("app")
            .expect("app")
            .password,
        "pw"
    );

    // Edited behind its back: put back.
    kubectl(&[
        "patch",
        "secret",
        &name,
        "-n",
        &ns,
        "--type=merge",
        "-p",
        "{\"stringData\":{\"tenant.yaml\":\"externalId: hijacked\"}}",
    ]);
    wait_document(&client, &ns, &ns, "acme", "restored content", |d| {
        d.external_id == "acme" && d.user("app").is_some_and(|u| u.password == "pw")
    })
    .await;

    // Deleting the Tenant removes its document and releases the finalizer.
    kubectl(&["delete", "tenant", "acme", "-n", &ns, "--wait=false"]);
    wait_document_gone(&client, &ns, &ns, "acme").await;
    wait_gone::<Tenant>(&client, &ns, "acme").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_fleets_availability() {
    // The fleet's Available condition is the fleet controller's to write, from its Deployment's
    // status. So both controllers run, and the test plays the missing controller-manager: it
    // writes the Deployment's status (status subresource) as the Deployment controller would
    // once a pod is available.
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    let fleet_ctx = Arc::new(pgfleet_operator::Context::new(client.clone(), IMAGE));
    let fleet_client = client.clone();
    let fleet_ns = ns.clone();
    let _fleets = Running(tokio::spawn(async move {
        pgfleet_operator::run_fleet_controller_in(fleet_client, fleet_ctx, &fleet_ns).await;
    }));
    create_fleet(&ns, "replicas: 1");
    create_secret(&ns, "app-pw", &[("password", "pw")]);
    create_tenant(
        &ns,
        "acme",
        &format!("fleetRef: {{name: edge}}\n{ONE_USER}"),
    );

    let tenant: Tenant = wait_for(
        &client,
        &ns,
        "acme",
        "Ready=False FleetNotAvailable",
        |t: &Tenant| {
            is_accepted(t)
                && condition(t, "Ready")
                    .is_some_and(|(s, r, _)| s == "False" && r == "FleetNotAvailable")
        },
    )
    .await;
    let (_, _, message) = condition(&tenant, "Ready").expect("Ready");
    assert!(
        message.contains("no pooler replica is available"),
        "{message}"
    );
    wait_event(&client, &ns, "acme", "FleetNotAvailable").await;

    let deployment: Deployment = wait_for(&client, &ns, FLEET, "exists", |_| true).await;
    let generation = deployment.metadata.generation.expect("generation");
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
            "{{\"status\":{{\"observedGeneration\":{generation},\"replicas\":1,\"readyReplicas\":1,\
             \"availableReplicas\":1,\"updatedReplicas\":1}}}}"
        ),
    ]);
    let tenant: Tenant = wait_for(&client, &ns, "acme", "Ready=True", |t: &Tenant| {
        condition(t, "Ready").is_some_and(|(s, r, _)| s == "True" && r == "Rendered")
    })
    .await;
    assert!(is_accepted(&tenant));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_re_renders_and_advances_observed_generation() {
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    create_fleet(&ns, "replicas: 1");
    create_secret(&ns, "app-pw", &[("password", "pw")]);
    create_tenant(
        &ns,
        "acme",
        &format!("fleetRef: {{name: edge}}\n{ONE_USER}"),
    );
    wait_document(&client, &ns, &ns, "acme", "transaction mode", |d| {
        d.mode == pgfleet_crds::PoolMode::Transaction
    })
    .await;
    let before: Tenant = wait_for(&client, &ns, "acme", "generation observed", |t: &Tenant| {
        t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
    })
    .await;

    kubectl(&[
        "patch",
        "tenant",
        "acme",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        "{\"spec\":{\"mode\":\"session\"}}",
    ]);
    let (secret, _) = wait_document(&client, &ns, &ns, "acme", "session mode", |d| {
        d.mode == pgfleet_crds::PoolMode::Session
    })
    .await;
    let after: Tenant = wait_for(
        &client,
        &ns,
        "acme",
        "new generation observed",
        |t: &Tenant| {
            t.metadata.generation > before.metadata.generation
                && t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
        },
    )
    .await;
    let generation = after.metadata.generation.expect("generation").to_string();
    assert_eq!(
        secret.metadata.annotations.expect("annotations")["pgfleet.io/tenant-generation"],
        generation
    );
    let accepted = after
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Accepted"))
        .expect("Accepted");
    assert_eq!(accepted.observed_generation, after.metadata.generation);

    // An invalid spec the schema cannot refuse: upstream TLS is not supported yet.
    kubectl(&[
        "patch",
        "tenant",
        "acme",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        "{\"spec\":{\"upstream\":{\"tls\":{\"mode\":\"require\"}}}}",
    ]);
    let tenant: Tenant = wait_for(
        &client,
        &ns,
        "acme",
        "InvalidSpec",
        rejected_for("InvalidSpec"),
    )
    .await;
    let (_, _, message) = condition(&tenant, "Accepted").expect("Accepted");
    assert!(message.contains("spec.upstream.tls.mode"), "{message}");
    wait_document_gone(&client, &ns, &ns, "acme").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_counts_the_tenants_it_serves() {
    // Both controllers: the Tenant controller accepts Tenants, the fleet controller counts
    // them into `status.tenants` (the TENANTS column of `kubectl get poolerfleets`).
    let _shared = EXCLUSIVE.read().await;
    let client = client().await;
    let ns = fresh_namespace();
    let _controller = start_controller(&client, &ns);
    let fleet_ctx = Arc::new(pgfleet_operator::Context::new(client.clone(), IMAGE));
    let fleet_client = client.clone();
    let fleet_ns = ns.clone();
    let _fleets = Running(tokio::spawn(async move {
        pgfleet_operator::run_fleet_controller_in(fleet_client, fleet_ctx, &fleet_ns).await;
    }));
    let tenants_of = |count: i32| {
        move |f: &pgfleet_crds::PoolerFleet| {
            f.status.as_ref().and_then(|s| s.tenants) == Some(count)
        }
    };
    create_fleet(&ns, "replicas: 1");
    wait_for(&client, &ns, "edge", "tenants: 0", tenants_of(0)).await;
    create_secret(&ns, "app-pw", &[("password", "pw")]);
    for name in ["acme", "globex"] {
        create_tenant(&ns, name, &format!("fleetRef: {{name: edge}}\n{ONE_USER}"));
    }
    // Not accepted (its Secret is missing): not counted.
    create_tenant(
        &ns,
        "initech",
        &format!(
            "fleetRef: {{name: edge}}\n{}",
            ONE_USER.replace("app-pw", "nowhere")
        ),
    );
    wait_for(&client, &ns, "edge", "tenants: 2", tenants_of(2)).await;
    kubectl(&["delete", "tenant", "globex", "-n", &ns, "--wait=false"]);
    wait_for(&client, &ns, "edge", "tenants: 1", tenants_of(1)).await;
    create_secret(&ns, "nowhere", &[("password", "pw")]);
    wait_for(&client, &ns, "edge", "tenants: 2 again", tenants_of(2)).await;
}
