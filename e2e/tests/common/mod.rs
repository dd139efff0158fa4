//! The end-to-end harness: processes under guard, the control plane (with pgfleet's CRDs), the
//! kubelet's part (a pooler started from the fleet's Deployment), PostgreSQL roles and
//! databases, clients, and bounded waits.
//!
//! Every wait is bounded and names what it waited for and what it saw last; every process is
//! killed when its guard drops, and a failing test prints the tails of the operator's and the
//! pooler's logs (their stderr, captured to files in a per-test directory).

// Not every test binary uses every helper; helpers outside #[test] fail loudly on purpose.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pgfleet_testkit::PgServer;
use pgfleet_testkit::kube::ControlPlane;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The operator binary, built in this package (see the crate documentation).
pub const OPERATOR_BIN: &str = env!("CARGO_BIN_EXE_e2e-pgfleet-operator");
/// The pooler binary, built in this package (see the crate documentation).
pub const POOLER_BIN: &str = env!("CARGO_BIN_EXE_e2e-pgfleet-pooler");
/// Pause between two looks while waiting (short: some waits are latency measurements).
pub const POLL: Duration = Duration::from_millis(10);
/// How long a start, a reconcile or an exit may take here (far above what they need).
pub const WAIT: Duration = Duration::from_secs(30);
/// Lines of each log shown when a test fails.
const LOG_TAIL: usize = 60;

// ---------------------------------------------------------------------------------------------
// Names, ports, templates
// ---------------------------------------------------------------------------------------------

/// A name unique in this run: `<prefix>-<pid>-<n>` (`_` instead of `-` when `sep` says so).
pub fn unique(prefix: &str, sep: char) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{sep}{}{sep}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `N` distinct free loopback ports (bound together, then released).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}

/// A manifest from `e2e/manifests/` with every `${KEY}` replaced; panics if one is left.
pub fn manifest(file: &str, vars: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(file);
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    for (key, value) in vars {
        text = text.replace(&format!("${{{key}}}"), value);
    }
    if let Some(at) = text.find("${") {
        panic!(
            "{file}: no value for {}",
            &text[at..text[at..].find('}').map_or(text.len(), |e| at + e + 1)]
        );
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Bounded waits
// ---------------------------------------------------------------------------------------------

/// Polls `probe` every [`POLL`] until it returns `Ok`, for at most `timeout`; returns the value
/// and how long it took. On timeout, panics naming `what` and the last `Err` the probe gave
/// (what it saw instead).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Ok(value) => return (value, start.elapsed()),
            Err(seen) => seen,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs blocking work (kubectl, psql) without stalling the runtime's other tasks, such as the
/// tokio-postgres connections.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process whose stderr goes to a log file; killed (SIGKILL) and reaped on drop, and
/// its log tail printed if the test is failing.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Process {
    /// Spawns `command` with stdin and stdout closed and stderr to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name} ({command:?}): {e}"));
        Process {
            name: name.to_string(),
            child,
            log,
            exit: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Panics (with the log tail) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited unexpectedly ({status}):\n{}",
                self.name,
                self.log_tail(LOG_TAIL)
            );
        }
    }

    /// Sends `signal` (e.g. `-TERM`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill {signal} {} failed", self.pid());
    }

    /// Waits (bounded) for the process to exit; returns its status and the time waited.
    pub async fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let what = format!("{} to exit", self.name);
        eventually(&what, timeout, || {
            let status = self.exited();
            async move { status.ok_or_else(|| "still running".to_string()) }
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- last {LOG_TAIL} lines of {} ({}) ---\n{}\n--- end of {} ---",
                self.name,
                self.log.display(),
                self.log_tail(LOG_TAIL),
                self.name
            );
        }
    }
}

/// A per-test directory for logs; removed when the test passes, kept (and named) when it fails.
pub struct Artifacts {
    dir: PathBuf,
}

impl Artifacts {
    /// Creates `$TMPDIR/pgfleet-e2e-<pid>-<n>/`.
    pub fn new() -> Artifacts {
        let dir = std::env::temp_dir().join(unique("pgfleet-e2e", '-'));
        std::fs::create_dir_all(&dir).expect("create the artifacts directory");
        Artifacts { dir }
    }

    /// A path in the directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Artifacts {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("e2e logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The control plane
// ---------------------------------------------------------------------------------------------

/// The shared control plane, with pgfleet's CRDs installed.
pub fn cp() -> &'static ControlPlane {
    static CRDS: Once = Once::new();
    let cp = ControlPlane::shared();
    CRDS.call_once(|| cp.apply_yaml(&pgfleet_crds::crds_yaml().expect("CRD YAML")));
    cp
}

/// `kubectl` as the admin; panics with its stderr on failure.
pub fn kubectl(args: &[&str]) -> String {
    blocking(|| cp().kubectl(args))
}

/// `kubectl` as the admin, returning its error.
pub fn try_kubectl(args: &[&str]) -> Result<String, String> {
    blocking(|| cp().try_kubectl(args))
}

/// Server-side apply as the admin.
pub fn apply(yaml: &str) {
    blocking(|| cp().apply_yaml(yaml));
}

/// `kubectl get <kind> <name> -n <namespace> -o json`, or `Err` (kubectl's message) when it
/// fails, e.g. because the object does not exist.
pub fn get_json(kind: &str, namespace: &str, name: &str) -> Result<Value, String> {
    let out = try_kubectl(&["get", kind, name, "-n", namespace, "-o", "json"])?;
    serde_json::from_str(&out).map_err(|e| format!("kubectl printed invalid JSON ({e}): {out}"))
}

/// Whether `kubectl get` says the object does not exist (as opposed to another failure).
pub fn is_not_found(error: &str) -> bool {
    error.contains("NotFound") || error.contains("not found")
}

/// `kubectl patch <kind> <name> --type=merge -p <patch>` as the admin.
pub fn merge_patch(kind: &str, namespace: &str, name: &str, patch: &str) {
    kubectl(&[
        "patch",
        kind,
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        patch,
    ]);
}

/// A fresh namespace on the shared control plane.
pub fn fresh_namespace() -> String {
    let ns = unique("pgf-e2e", '-');
    apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    ));
    ns
}

/// The condition `type_` of an object's `status.conditions` as `(status, reason, message)`.
pub fn condition(object: &Value, type_: &str) -> Option<(String, String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (field("status"), field("reason"), field("message"))
        })
}

/// The conditions of an object, compactly, for failure messages.
pub fn conditions_text(object: &Value) -> String {
    object["status"]["conditions"].to_string()
}

// ---------------------------------------------------------------------------------------------
// The operator
// ---------------------------------------------------------------------------------------------

/// A running `pgfleet-operator` and its admin address.
pub struct Operator {
    /// The process.
    pub process: Process,
    /// Where its admin server listens.
    pub admin: SocketAddr,
}

impl Operator {
    /// Starts the operator as the Helm chart would run one replica: watching `namespace`, with
    /// leader election on a Lease in `namespace`, JSON logs, its admin server on a free
    /// loopback port; `KUBECONFIG` is the control plane's admin (the chart's ClusterRole is
    /// not what is under test here). Returns once `/readyz` says it leads.
    pub async fn start(namespace: &str, artifacts: &Artifacts) -> Operator {
        let mut command = Command::new(OPERATOR_BIN);
        command
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(["--namespace", namespace])
            .args(["--lease-namespace", namespace])
            .args(["--identity", "pgfleet-operator-e2e-0"])
            .args(["--log-format", "json", "--log", "info"])
            .env_clear()
            .env("KUBECONFIG", cp().kubeconfig());
        let mut process =
            Process::spawn("pgfleet-operator", command, artifacts.path("operator.log"));
        let (admin, _) = eventually("the operator to log its admin address", WAIT, || {
            process.assert_running();
            let found = admin_addr_in(&process.log_text());
            async move { found.ok_or_else(|| "no \"admin server listening\" line yet".into()) }
        })
        .await;
        eventually(
            "the operator to be ready as the leader",
            WAIT,
            move || async move {
                match http_get(admin, "/readyz").await {
                    Ok((200, body)) if body.contains("leader") => Ok(()),
                    Ok((code, body)) => Err(format!("{code} {body:?}")),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
        Operator { process, admin }
    }
}

/// The address in the operator's JSON "admin server listening" line.
fn admin_addr_in(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        (v["message"] == "admin server listening")
            .then(|| v["addr"].as_str()?.parse().ok())
            .flatten()
    })
}

// ---------------------------------------------------------------------------------------------
// The kubelet's part: a pooler started from the fleet's Deployment
// ---------------------------------------------------------------------------------------------

/// What the kubelet would take from the Deployment's pod template to run the pooler container.
#[derive(Debug)]
pub struct PodSpecView {
    /// The container's arguments (the image's entrypoint is `pgfleet-pooler`).
    pub args: Vec<String>,
    /// The container's `env` entries, unresolved.
    pub env: Vec<Value>,
    /// `serviceAccountName` of the pod.
    pub service_account: String,
    /// The readiness probe's HTTP path.
    pub readiness_path: String,
    /// The readiness probe's port (named ports resolved against the container's ports).
    pub readiness_port: u16,
    /// `terminationGracePeriodSeconds` of the pod.
    pub grace_period: Duration,
}

impl PodSpecView {
    /// Reads the `pooler` container of a Deployment (JSON as the API returns it).
    pub fn of(deployment: &Value) -> PodSpecView {
        let pod = &deployment["spec"]["template"]["spec"];
        let container = pod["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "pooler"))
            .unwrap_or_else(|| panic!("no `pooler` container in {pod}"));
        assert!(
            container.get("command").is_none(),
            "the pooler container sets `command` ({}); the e2e harness assumes the image's \
             entrypoint is pgfleet-pooler and only `args` are given",
            container["command"]
        );
        let args = container["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().expect("args are strings").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let env = container["env"].as_array().cloned().unwrap_or_default();
        let probe = &container["readinessProbe"]["httpGet"];
        let readiness_path = probe["path"]
            .as_str()
            .unwrap_or_else(|| panic!("the pooler container has no HTTP readiness probe"))
            .to_string();
        let readiness_port = match &probe["port"] {
            Value::Number(n) => u16::try_from(n.as_u64().expect("port")).expect("port"),
            Value::String(name) => container["ports"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == *name))
                .and_then(|p| p["containerPort"].as_u64())
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("the readiness probe's port {name} is not declared")),
            other => panic!("readiness probe port {other}"),
        };
        PodSpecView {
            args,
            env,
            service_account: pod["serviceAccountName"]
                .as_str()
                .expect("serviceAccountName")
                .to_string(),
            readiness_path,
            readiness_port,
            grace_period: Duration::from_secs(
                pod["terminationGracePeriodSeconds"]
                    .as_u64()
                    .expect("terminationGracePeriodSeconds"),
            ),
        }
    }

    /// The value of `--<flag>` in the args.
    pub fn arg(&self, flag: &str) -> Option<&str> {
        let flag = format!("--{flag}");
        self.args
            .iter()
            .position(|a| *a == flag)
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }

    /// The container's environment as the kubelet resolves it for pod `pod_name` in
    /// `namespace`: literal values as they are, downward-API `fieldRef`s filled in. Anything
    /// else (Secret or ConfigMap references) is not expected in the pooler's template.
    pub fn resolved_env(&self, pod_name: &str, namespace: &str) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|e| {
                let name = e["name"].as_str().expect("env name").to_string();
                if let Some(value) = e["value"].as_str() {
                    return (name, value.to_string());
                }
                let path = e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .unwrap_or_else(|| panic!("env {name}: unsupported source {e}"));
                let value = match path {
                    "metadata.name" => pod_name.to_string(),
                    "metadata.namespace" => namespace.to_string(),
                    "spec.serviceAccountName" => self.service_account.clone(),
                    // The pod's IP: the pooler listens on loopback here (see `Pooler::start`).
                    "status.podIP" | "status.podIPs" => "127.0.0.1".to_string(),
                    other => panic!("env {name}: fieldRef {other} not handled by the harness"),
                };
                (name, value)
            })
            .collect()
    }
}

/// A `pgfleet-pooler` process started as one of the fleet's pods.
pub struct Pooler {
    /// The process.
    pub process: Process,
    /// What it was started from.
    pub pod: PodSpecView,
    /// The pod name it was given.
    pub pod_name: String,
}

impl Pooler {
    /// Starts the pooler container of `deployment` as pod `pod_name` of `namespace`: the
    /// container's args and env exactly, `fieldRef`s resolved, and nothing of the test
    /// process's environment. Two additions stand in for what a pod gets from its node:
    ///
    /// * `KUBECONFIG`: a kubeconfig for the Deployment's ServiceAccount (a TokenRequest token,
    ///   like the projected token a pod mounts), so the pooler reads its documents with
    ///   exactly the fleet Role's rights;
    /// * `PGFLEET_LISTEN=127.0.0.1`: a pod listens on `0.0.0.0` in its own network namespace;
    ///   here every process shares the host's, so the pooler listens on loopback, which stands
    ///   in for the pod IP.
    pub fn start(
        deployment: &Value,
        namespace: &str,
        pod_name: &str,
        artifacts: &Artifacts,
    ) -> Pooler {
        let pod = PodSpecView::of(deployment);
        let kubeconfig =
            blocking(|| cp().kubeconfig_for_service_account(namespace, &pod.service_account));
        let mut command = Command::new(POOLER_BIN);
        command
            .args(&pod.args)
            .env_clear()
            .envs(pod.resolved_env(pod_name, namespace))
            .env("HOSTNAME", pod_name)
            .env("KUBECONFIG", kubeconfig)
            .env("PGFLEET_LISTEN", "127.0.0.1");
        let process = Process::spawn(
            "pgfleet-pooler",
            command,
            artifacts.path(&format!("{pod_name}.log")),
        );
        Pooler {
            process,
            pod,
            pod_name: pod_name.to_string(),
        }
    }

    /// The port the Deployment gives the pooler for `flag` (`session-port`, `pooled-port`,
    /// `admin-port`).
    pub fn port(&self, flag: &str) -> u16 {
        self.pod
            .arg(flag)
            .unwrap_or_else(|| panic!("no --{flag} in {:?}", self.pod.args))
            .parse()
            .expect("a port number")
    }

    /// The pooled port.
    pub fn pooled(&self) -> u16 {
        self.port("pooled-port")
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port("admin-port")))
    }

    /// One readiness probe, as the kubelet sends it: the status code and body.
    pub async fn probe_readiness(&self) -> Result<(u16, String), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.pod.readiness_port));
        http_get(addr, &self.pod.readiness_path).await
    }

    /// Waits until the readiness probe passes (and the process keeps running); returns how
    /// long it took.
    pub async fn wait_ready(&mut self) -> Duration {
        let start = Instant::now();
        loop {
            self.process.assert_running();
            let last = match self.probe_readiness().await {
                Ok((200, _)) => return start.elapsed(),
                Ok((code, body)) => format!("{code} {body:?}"),
                Err(e) => e,
            };
            assert!(
                start.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for the readiness probe of {} to pass; \
                 last seen: {last}",
                self.pod_name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET /status` on the admin port, as JSON.
    pub async fn status(&self) -> Result<Value, String> {
        let (code, body) = http_get(self.admin(), "/status").await?;
        if code != 200 {
            return Err(format!("/status answered {code}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("/status is not JSON ({e}): {body}"))
    }
}

/// The entry of tenant `external_id` in a `/status` document.
pub fn status_tenant<'a>(status: &'a Value, external_id: &str) -> Option<&'a Value> {
    status["tenants"]
        .as_array()?
        .iter()
        .find(|t| t["externalId"] == external_id)
}

/// The live (not retired) pools of tenant `external_id` in a `/status` document.
pub fn live_pools<'a>(status: &'a Value, external_id: &str) -> Vec<&'a Value> {
    status["pools"]
        .as_array()
        .map(|pools| {
            pools
                .iter()
                .filter(|p| p["tenant"] == external_id && p["retired"] == false)
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// `GET path` over HTTP/1.0 (no chunked bodies); the status code and body. Bounded by 5 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status line in {response:?}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("GET {path} on {addr}: no answer within 5 s"))?
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// The shared PostgreSQL server.
pub fn pg() -> &'static PgServer {
    PgServer::shared()
}

/// A fresh login role with a SCRAM password, owning a fresh database; returns both names.
pub fn fresh_role_and_database(prefix: &str, password: &str) -> (String, String) {
    let role = unique(prefix, '_');
    let database = format!("{role}_db");
    blocking(|| {
        pg().psql(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"));
        pg().create_database(&database, &role);
    });
    (role, database)
}

/// Connects through `port` as `user` (tokio-postgres, no TLS); the connection task runs in
/// the background until the client is dropped.
pub async fn connect(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(database)
        .application_name("pgfleet-e2e")
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `(SQLSTATE, message)` of a server error, or the error's text as the message.
pub fn db_error(error: &tokio_postgres::Error) -> (String, String) {
    match error.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => (String::new(), error.to_string()),
    }
}

/// The first row of `sql` (simple protocol) as strings; panics naming the query on failure.
pub async fn row(client: &Client, sql: &str) -> Vec<String> {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| {
        let (code, message) = db_error(&e);
        panic!("{sql}: {code} {message}")
    });
    messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}
