//! The Kubernetes tenant source against a real kube-apiserver (testkit's control plane) and a
//! real PostgreSQL: tenant-document Secrets labelled with the pooler's fleet become tenants,
//! edits apply in place, a broken edit keeps the last valid version, a deleted Secret removes
//! its tenant, other fleets' Secrets are ignored, `/readyz` waits for the first list, an
//! unreachable API server is retried, and a ServiceAccount with get/list/watch on Secrets in
//! its namespace is all the pooler needs.
// Tests run on ordinary runtimes, with time drivers: tokio's timers are fine here
// (pooler/clippy.toml keeps them out of the pooler itself).
#![allow(clippy::disallowed_methods)]
// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use pgfleet_crds::TenantDocument;
use pgfleet_pooler::app::{PoolerConfig, RunningPooler, TenantSourceConfig, Workers};
use pgfleet_pooler::tenants::kubernetes::KubernetesSourceConfig;
use pgfleet_pooler::tenants::tenant::revision_of;
use pgfleet_testkit::kube::ControlPlane;
use testkit::{SCRAM_PASSWORD, SCRAM_USER};
use tokio_postgres::{Client, SimpleQueryMessage};

/// How long the source may take to see a change (the watch delivers in milliseconds).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

fn cp() -> &'static ControlPlane {
    ControlPlane::shared()
}

/// A namespace name unique in this run (DNS label), created on the shared control plane.
fn fresh_namespace() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ns = format!(
        "pgf-src-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    cp().apply_yaml(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    ));
    ns
}

/// A tenant-document Secret as the operator renders it.
fn secret_yaml(namespace: &str, name: &str, fleet: &str, key: &str, document: &str) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(document);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
         labels:\n    pgfleet.io/fleet: {fleet}\n    pgfleet.io/tenant: {name}\n    \
         pgfleet.io/tenant-namespace: {namespace}\ntype: Opaque\ndata:\n  {key}: {data}\n"
    )
}

fn apply_secret(namespace: &str, name: &str, fleet: &str, document: &str) {
    cp().apply_yaml(&secret_yaml(
        namespace,
        name,
        fleet,
        "tenant.yaml",
        document,
    ));
}

fn delete_secret(namespace: &str, name: &str) {
    cp().kubectl(&["delete", "secret", name, "-n", namespace, "--wait=false"]);
}

fn source(namespace: &str, fleet: &str, kubeconfig: &Path) -> KubernetesSourceConfig {
    KubernetesSourceConfig {
        fleet: fleet.to_string(),
        namespace: Some(namespace.to_string()),
        kubeconfig: Some(kubeconfig.to_path_buf()),
    }
}

/// Starts an in-process pooler on free loopback ports with the Kubernetes source.
async fn start(config: KubernetesSourceConfig) -> RunningPooler {
    RunningPooler::start(PoolerConfig {
        tenant_source: TenantSourceConfig::Kubernetes(config),
        listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
        session_port: 0,
        pooled_port: 0,
        max_connections: 10_000,
        settings: test_settings(),
        workers: Workers::Ambient,
        admin_port: Some(0),
    })
    .await
    .expect("pooler starts")
}

/// Polls `cond` until it holds, for at most `limit`.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "{what}: not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the pooler serves `document` (its external id, at its revision).
async fn wait_loaded(pooler: &RunningPooler, document: &str) {
    let doc = TenantDocument::parse(document).expect("test documents are valid");
    let want = revision_of(&doc);
    wait_for(
        &format!("tenant {} loaded", doc.external_id),
        CHANGE_TIMEOUT,
        || {
            pooler
                .shared
                .tenants
                .get(&doc.external_id)
                .is_some_and(|t| t.revision == want)
        },
    )
    .await;
}

async fn readyz(pooler: &RunningPooler) -> (u16, String) {
    http_get(pooler.admin_addr.expect("admin port"), "/readyz").await
}

/// Waits until `/readyz` answers 200, for at most `limit`.
async fn wait_ready(pooler: &RunningPooler, limit: Duration) {
    let start = Instant::now();
    loop {
        let (code, body) = readyz(pooler).await;
        if code == 200 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "/readyz still {code} {body:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts `/readyz` says the tenant source is not synced, again and again for `period`.
async fn assert_not_synced_for(pooler: &RunningPooler, period: Duration) {
    let start = Instant::now();
    while start.elapsed() < period {
        let (code, body) = readyz(pooler).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("tenant source not synced"), "{body:?}");
        assert!(!pooler.shared.tenants.is_synced());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first column of the first row of `sql` (simple protocol).
async fn scalar(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", message(&e)));
    for m in messages {
        if let SimpleQueryMessage::Row(row) = m {
            return row.get(0).expect("first column is not NULL").to_string();
        }
    }
    panic!("{sql}: returned no row");
}

async fn login(port: u16, tenant: &str, db: &str) -> Client {
    let user = format!("{SCRAM_USER}.{tenant}");
    connect_to(port, &user, SCRAM_PASSWORD, db)
        .await
        .unwrap_or_else(|e| panic!("login {user} to {db}: {}", message(&e)))
}

fn doc(id: &str, db: &str, extra: &str) -> String {
    tenant_doc(id, db, &[(SCRAM_USER, SCRAM_PASSWORD)], extra)
}

/// A copy of the admin kubeconfig whose server is `127.0.0.1:port` (the serving
/// certificate is for 127.0.0.1, so TLS still verifies through a forwarder on that port).
fn kubeconfig_on_port(port: u16) -> PathBuf {
    let text = std::fs::read_to_string(cp().kubeconfig()).expect("read kubeconfig");
    let from = format!("server: {}", cp().server_url());
    assert!(text.contains(&from), "kubeconfig has {from}");
    let text = text.replace(&from, &format!("server: https://127.0.0.1:{port}"));
    let path = std::env::temp_dir().join(format!(
        "pgfleet-src-{}-{port}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_makes_its_tenant_reachable_and_edits_apply_in_place() {
    let ns = fresh_namespace();
    let db = fresh_database(SCRAM_USER);
    let v1 = doc("k8s-app", &db, "defaultPoolSize: 1\n");
    apply_secret(&ns, "k8s-app", "main", &v1);
    let pooler = start(source(&ns, "main", cp().kubeconfig())).await;
    wait_loaded(&pooler, &v1).await;
    wait_ready(&pooler, CHANGE_TIMEOUT).await;

    // Login and query on both ports.
    let pooled = login(pooler.pooled_addr.port(), "k8s-app", &db).await;
    assert_eq!(scalar(&pooled, "SELECT current_database()").await, db);
    let session = login(pooler.session_addr.port(), "k8s-app", &db).await;
    let session_pid = scalar(&session, "SELECT pg_backend_pid()").await;
    // A transaction is open on the pooled port while the Secret changes.
    let tx_pid = scalar(&pooled, "BEGIN; SELECT pg_backend_pid()").await;

    let v2 = doc("k8s-app", &db, "defaultPoolSize: 3\n");
    apply_secret(&ns, "k8s-app", "main", &v2);
    wait_loaded(&pooler, &v2).await;
    let pools = pooler.shared.pools.of_tenant("k8s-app");
    assert!(!pools.is_empty());
    for pool in &pools {
        assert_eq!(pool.config().size, 3, "{:?} resized in place", pool.key);
    }
    // Neither client noticed: same servers, the transaction commits.
    assert_eq!(scalar(&pooled, "SELECT pg_backend_pid()").await, tx_pid);
    pooled.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(
        scalar(&session, "SELECT pg_backend_pid()").await,
        session_pid
    );
    // And the bigger pool serves three transactions at once.
    let more = [
        login(pooler.pooled_addr.port(), "k8s-app", &db).await,
        login(pooler.pooled_addr.port(), "k8s-app", &db).await,
    ];
    scalar(&pooled, "BEGIN; SELECT 1").await;
    for c in &more {
        tokio::time::timeout(Duration::from_secs(2), scalar(c, "BEGIN; SELECT 1"))
            .await
            .expect("a server of the grown pool");
    }
    assert_eq!(readyz(&pooler).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_keeps_the_last_valid_version() {
    let ns = fresh_namespace();
    let db = fresh_database(SCRAM_USER);
    let good = doc("k8s-flaky", &db, "");
    apply_secret(&ns, "flaky", "main", &good);
    let pooler = start(source(&ns, "main", cp().kubeconfig())).await;
    wait_loaded(&pooler, &good).await;
    let revision = pooler
        .shared
        .tenants
        .get("k8s-flaky")
        .expect("loaded")
        .revision;
    let connected = login(pooler.pooled_addr.port(), "k8s-flaky", &db).await;

    let broken = [
        // Not YAML.
        secret_yaml(&ns, "flaky", "main", "tenant.yaml", "externalId: [\n"),
        // YAML, but fails validation.
        secret_yaml(
            &ns,
            "flaky",
            "main",
            "tenant.yaml",
            &good.replace(
                "externalId: k8s-flaky",
                "externalId: k8s-flaky\ndefaultPoolSize: 0",
            ),
        ),
        // The document key is missing.
        secret_yaml(&ns, "flaky", "main", "other.yaml", &good),
    ];
    for (n, bad) in broken.iter().enumerate() {
        cp().apply_yaml(bad);
        // A later change to another Secret is seen after the broken edit (one watch, in
        // order): once it is loaded, the broken edit has been handled.
        let marker = doc(&format!("k8s-marker{n}"), &db, "");
        apply_secret(&ns, &format!("marker{n}"), "main", &marker);
        wait_loaded(&pooler, &marker).await;
        let kept = pooler.shared.tenants.get("k8s-flaky").expect("tenant kept");
        assert_eq!(
            kept.revision, revision,
            "edit {n}: the last valid version is served"
        );
        let again = login(pooler.pooled_addr.port(), "k8s-flaky", &db).await;
        assert_eq!(scalar(&again, "SELECT 1").await, "1");
        assert_eq!(scalar(&connected, "SELECT 2").await, "2");
    }
    // A valid edit applies again.
    let fixed = doc("k8s-flaky", &db, "defaultPoolSize: 4\n");
    apply_secret(&ns, "flaky", "main", &fixed);
    wait_loaded(&pooler, &fixed).await;
    assert_eq!(readyz(&pooler).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_secret_refuses_new_logins_and_connected_clients_keep_working() {
    let ns = fresh_namespace();
    let (db, db_other) = (fresh_database(SCRAM_USER), fresh_database(SCRAM_USER));
    let gone = doc("k8s-gone", &db, "");
    let stays = doc("k8s-stays", &db_other, "");
    apply_secret(&ns, "gone", "main", &gone);
    apply_secret(&ns, "stays", "main", &stays);
    let pooler = start(source(&ns, "main", cp().kubeconfig())).await;
    wait_loaded(&pooler, &gone).await;
    wait_loaded(&pooler, &stays).await;
    let port = pooler.pooled_addr.port();
    let c = login(port, "k8s-gone", &db).await;
    let tx_pid = scalar(&c, "BEGIN; SELECT pg_backend_pid()").await;
    let other = login(pooler.session_addr.port(), "k8s-stays", &db_other).await;
    let other_pid = scalar(&other, "SELECT pg_backend_pid()").await;

    delete_secret(&ns, "gone");
    wait_for("tenant removed", CHANGE_TIMEOUT, || {
        pooler.shared.tenants.get("k8s-gone").is_none()
    })
    .await;
    assert_not_found(port, "k8s-gone", &db).await;
    assert_not_found(pooler.session_addr.port(), "k8s-gone", &db).await;
    // The connected client finishes its transaction and goes on.
    assert_eq!(scalar(&c, "SELECT pg_backend_pid()").await, tx_pid);
    c.batch_execute("COMMIT")
        .await
        .expect("commit after removal");
    for n in 0..3 {
        assert_eq!(scalar(&c, &format!("SELECT {n}")).await, n.to_string());
    }
    // The other tenant noticed nothing.
    assert_eq!(scalar(&other, "SELECT pg_backend_pid()").await, other_pid);
    assert_eq!(readyz(&pooler).await.0, 200);
    drop(c);
    wait_backends(SCRAM_USER, &db, |n| n == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_of_other_fleets_and_namespaces_are_ignored() {
    let (ns, elsewhere) = (fresh_namespace(), fresh_namespace());
    let db = fresh_database(SCRAM_USER);
    let mine = doc("k8s-mine", &db, "");
    apply_secret(&ns, "mine", "main", &mine);
    apply_secret(&ns, "theirs", "other-fleet", &doc("k8s-theirs", &db, ""));
    apply_secret(&elsewhere, "far", "main", &doc("k8s-far", &db, ""));
    // Not a tenant-document Secret at all.
    cp().apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: unrelated\n  namespace: {ns}\n\
         stringData:\n  tenant.yaml: 'externalId: k8s-unrelated'\n"
    ));
    let pooler = start(source(&ns, "main", cp().kubeconfig())).await;
    wait_loaded(&pooler, &mine).await;
    wait_ready(&pooler, CHANGE_TIMEOUT).await;
    // Changes to the others after the start are ignored too.
    apply_secret(
        &ns,
        "theirs",
        "other-fleet",
        &doc("k8s-theirs", &db, "defaultPoolSize: 2\n"),
    );
    let mine2 = doc("k8s-mine", &db, "defaultPoolSize: 2\n");
    apply_secret(&ns, "mine", "main", &mine2);
    wait_loaded(&pooler, &mine2).await;
    let ids: Vec<String> = pooler.shared.tenants.snapshot().keys().cloned().collect();
    assert_eq!(ids, ["k8s-mine"]);
    assert_not_found(pooler.pooled_addr.port(), "k8s-theirs", &db).await;
    assert_not_found(pooler.pooled_addr.port(), "k8s-far", &db).await;

    // Relabelling a Secret into another fleet removes its tenant here.
    apply_secret(&ns, "mine", "other-fleet", &mine2);
    wait_for("relabelled tenant removed", CHANGE_TIMEOUT, || {
        pooler.shared.tenants.snapshot().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_api_server_is_unreachable_and_syncs_once_it_answers() {
    let ns = fresh_namespace();
    let db = fresh_database(SCRAM_USER);
    let tenant = doc("k8s-late", &db, "");
    apply_secret(&ns, "late", "main", &tenant);
    // Nothing listens on this port yet.
    let port = free_port();
    let kubeconfig = kubeconfig_on_port(port);
    let pooler = start(source(&ns, "main", &kubeconfig)).await;

    // The ports are up, but the pooler is not ready and knows no tenant.
    assert_not_synced_for(&pooler, Duration::from_secs(3)).await;
    assert_not_found(pooler.pooled_addr.port(), "k8s-late", &db).await;

    // The API server becomes reachable on that port: the source, still retrying, syncs.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the forwarder on the kubeconfig's port");
    let upstream = cp().port();
    let forwarder = tokio::spawn(async move {
        // Connections live in the set: aborting the forwarder cuts them all.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            connections.spawn(async move {
                if let Ok(mut outbound) =
                    tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    // Retries back off to at most 10 s (plus jitter).
    wait_ready(&pooler, Duration::from_secs(20)).await;
    wait_loaded(&pooler, &tenant).await;
    let c = login(pooler.pooled_addr.port(), "k8s-late", &db).await;
    assert_eq!(scalar(&c, "SELECT 1").await, "1");

    // Losing the API server later (listener and live watch connection cut) does not unready
    // the pooler: it serves what it knows while it retries.
    forwarder.abort();
    let _ = forwarder.await;
    let reloads = pooler.shared.tenants.reloads();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        assert_eq!(readyz(&pooler).await.0, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c2 = login(pooler.pooled_addr.port(), "k8s-late", &db).await;
    assert_eq!(scalar(&c2, "SELECT 2").await, "2");
    assert_eq!(
        pooler.shared.tenants.reloads(),
        reloads,
        "no reload without the API"
    );
    assert!(pooler.shared.tenants.get("k8s-late").is_some());
    let _ = std::fs::remove_file(&kubeconfig);
}

/// A Role with exactly what the pooler needs: get, list and watch Secrets in its namespace.
fn pooler_role(namespace: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: pgfleet-pooler\n  \
         namespace: {namespace}\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  \
         verbs: [get, list, watch]\n"
    )
}

fn pooler_role_binding(namespace: &str, service_account: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  \
         name: pgfleet-pooler\n  namespace: {namespace}\nroleRef:\n  \
         apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: pgfleet-pooler\n\
         subjects:\n- kind: ServiceAccount\n  name: {service_account}\n  namespace: {namespace}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_with_get_list_watch_on_secrets_is_enough() {
    let ns = fresh_namespace();
    let db = fresh_database(SCRAM_USER);
    let kubeconfig = cp().kubeconfig_for_service_account(&ns, "pooler");
    cp().apply_yaml(&pooler_role(&ns));
    cp().apply_yaml(&pooler_role_binding(&ns, "pooler"));
    let v1 = doc("k8s-rbac", &db, "");
    apply_secret(&ns, "rbac", "main", &v1);
    // The namespace comes from the kubeconfig context, as in a pod from its ServiceAccount.
    let pooler = start(KubernetesSourceConfig {
        fleet: "main".into(),
        namespace: None,
        kubeconfig: Some(kubeconfig),
    })
    .await;
    wait_ready(&pooler, CHANGE_TIMEOUT).await;
    wait_loaded(&pooler, &v1).await;
    let c = login(pooler.pooled_addr.port(), "k8s-rbac", &db).await;
    assert_eq!(scalar(&c, "SELECT 1").await, "1");
    // Watching works with the same rights.
    let v2 = doc("k8s-rbac", &db, "defaultPoolSize: 5\n");
    apply_secret(&ns, "rbac", "main", &v2);
    wait_loaded(&pooler, &v2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_role_binding_the_pooler_never_becomes_ready() {
    let ns = fresh_namespace();
    let db = fresh_database(SCRAM_USER);
    let kubeconfig = cp().kubeconfig_for_service_account(&ns, "pooler");
    cp().apply_yaml(&pooler_role(&ns));
    let tenant = doc("k8s-denied", &db, "");
    apply_secret(&ns, "denied", "main", &tenant);
    let pooler = start(source(&ns, "main", &kubeconfig)).await;
    assert_not_synced_for(&pooler, Duration::from_secs(4)).await;
    assert_not_found(pooler.pooled_addr.port(), "k8s-denied", &db).await;

    // The source kept retrying: granting the rights makes it ready without a restart.
    cp().apply_yaml(&pooler_role_binding(&ns, "pooler"));
    wait_ready(&pooler, Duration::from_secs(20)).await;
    wait_loaded(&pooler, &tenant).await;
}

/// Kills and reaps the child on drop, so a failing test leaks no process.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_as_the_fleet_deployment_runs_it() {
    let ns = fresh_namespace();
    let db = fresh_database(SCRAM_USER);
    let kubeconfig = cp().kubeconfig_for_service_account(&ns, "pooler");
    cp().apply_yaml(&pooler_role(&ns));
    cp().apply_yaml(&pooler_role_binding(&ns, "pooler"));
    let tenant = doc("k8s-bin", &db, "");
    apply_secret(&ns, "bin", "main", &tenant);
    let (session, pooled, admin) = (free_port(), free_port(), free_port());
    let log_path = std::env::temp_dir().join(format!("{}.log", unique("pgfleet-k8s-bin")));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_pgfleet-pooler"))
            .args(["--tenant-source", "kubernetes", "--fleet", "main"])
            .args(["--namespace", &ns, "--listen", "127.0.0.1"])
            .args(["--session-port", &session.to_string()])
            .args(["--pooled-port", &pooled.to_string()])
            .args(["--admin-port", &admin.to_string()])
            .args(["--log-format", "json", "--drain-delay", "1s"])
            .args(["--shutdown-timeout", "25s"])
            // In a pod the in-cluster config is used; here KUBECONFIG, in the child only.
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("PGFLEET_TENANTS_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn pgfleet-pooler"),
    );
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let admin_addr = local(admin);
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("pgfleet-pooler exited ({status}):\n{}", read_log());
        }
        if tokio::net::TcpStream::connect(admin_addr).await.is_ok()
            && http_get(admin_addr, "/readyz").await.0 == 200
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not ready within 20 s:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = login(pooled, "k8s-bin", &db).await;
    assert_eq!(scalar(&c, "SELECT 1").await, "1");

    // A broken edit is logged with the Secret's namespace/name and why.
    cp().apply_yaml(&secret_yaml(
        &ns,
        "bin",
        "main",
        "tenant.yaml",
        "externalId: [\n",
    ));
    let secret = format!("{ns}/bin");
    wait_for("the broken Secret is logged", CHANGE_TIMEOUT, || {
        read_log().lines().any(|line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
                v["secret"] == secret.as_str()
                    && v["message"] == "tenant document not loaded"
                    && v["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("keeping its last valid version"))
            })
        })
    })
    .await;
    let again = login(pooled, "k8s-bin", &db).await;
    assert_eq!(scalar(&again, "SELECT 2").await, "2");

    // SIGHUP relists; the broken Secret still serves its last valid document afterwards.
    let loaded_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("\"tenants loaded\""))
            .count()
    };
    let before = loaded_lines(&read_log());
    let status = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success());
    wait_for("a reload after SIGHUP", CHANGE_TIMEOUT, || {
        let log = read_log();
        log.contains("SIGHUP: relisting tenant-document Secrets") && loaded_lines(&log) > before
    })
    .await;
    let after_hup = login(pooled, "k8s-bin", &db).await;
    assert_eq!(scalar(&after_hup, "SELECT 3").await, "3");
    drop((c, again, after_hup));

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGTERM:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit {status}:\n{}", read_log());
    let _ = std::fs::remove_file(&log_path);
}
