//! A local Kubernetes control plane for pgfleet's operator tests: a real
//! `kube-apiserver` backed by real storage, never a mock.
//!
//! * The binaries are built from their published Go modules by
//!   `testkit/k8s/build-control-plane.sh` (`k8s.io/kubernetes` v1.36.3 and
//!   `github.com/k3s-io/kine` v0.17.5) with the machine's Go, once, and cached
//!   under `${PGFLEET_CACHE:-$HOME/.cache/pgfleet}/control-plane/` keyed by
//!   both versions. The first build takes many minutes on two cores; later
//!   starts only check the cache. [`ControlPlane::start`] runs the script
//!   itself (its progress goes to stderr), so tests need no setup step.
//! * Storage is kine with its in-memory driver (`memory://`), which speaks
//!   the etcd v3 API the apiserver uses: every control plane starts empty and
//!   leaves nothing behind.
//! * Like envtest, only kine and kube-apiserver run: no controller-manager,
//!   scheduler or kubelet. Deployments never get Pods, garbage collection of
//!   owned objects does not happen, deleted namespaces stay `Terminating`,
//!   and no `default` ServiceAccount is created (the `ServiceAccount`
//!   admission plugin is disabled for that reason). Tests patch `status`
//!   themselves where they need it.
//!
//! # Credentials and TLS
//!
//! Every start generates its own credentials with `openssl`, in the control
//! plane's directory:
//!
//! * a private CA (`pki/ca.crt`, ECDSA P-256) and a serving certificate for
//!   `127.0.0.1`/`localhost` signed by it, passed as `--tls-cert-file`. The
//!   kubeconfigs embed that CA (`certificate-authority-data`), so clients
//!   **verify** the server instead of skipping TLS checks;
//!   [`ControlPlane::ca_cert`] is the same CA as a file;
//! * a random admin bearer token in a `--token-auth-file`, for user
//!   `pgfleet-testkit-admin` in group `system:masters` (bypasses RBAC);
//! * a ServiceAccount signing key pair, so the TokenRequest API works and
//!   [`ControlPlane::kubeconfig_for_service_account`] can give a test a real,
//!   RBAC-restricted identity.
//!
//! Authorization is `RBAC` only.
//!
//! # Layout and cleanup
//!
//! Each control plane lives in `$TMPDIR/pgfleet-kube-<pid>-<n>/` (logs
//! `kine.log` and `kube-apiserver.log`, `pki/`, kubeconfigs, kubectl's cache).
//! Dropping a [`ControlPlane`] kills both processes and removes the
//! directory. A watchdog (`sh` in its own process group, blocked reading a
//! pipe whose only writer is this process) does the same when the process
//! exits in any other way, which is what cleans up [`ControlPlane::shared`].
//!
//! # kubectl
//!
//! `kubectl` is taken from `$KUBECTL` or `PATH`. It is run with an explicit
//! `--kubeconfig` (an inherited `KUBECONFIG` is ignored) and a per-control-
//! plane `--cache-dir`, so discovery caches never leak between runs that
//! happen to reuse a port.

use crate::log_tail;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `k8s.io/kubernetes` version the control plane runs (as `kube-apiserver
/// --version` and `/version` report it, without the `v`). Kept in step with
/// `K8S_VERSION` in `testkit/k8s/build-control-plane.sh`.
pub const K8S_VERSION: &str = "1.36.3";
/// `github.com/k3s-io/kine` version used as storage. Kept in step with
/// `KINE_VERSION` in `testkit/k8s/build-control-plane.sh`.
pub const KINE_VERSION: &str = "v0.17.5";

/// Loopback address both processes listen on.
const HOST: &str = "127.0.0.1";
/// How long kube-apiserver may take to report `/readyz` ok.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long kine may take to accept TCP connections.
const KINE_TIMEOUT: Duration = Duration::from_secs(15);
/// Tries (with fresh ports) before a start fails.
const START_ATTEMPTS: u32 = 3;
/// How long `kubectl wait` waits for CRDs to become Established.
const ESTABLISHED_TIMEOUT: &str = "60s";
/// Field manager of [`ControlPlane::apply_yaml`].
const FIELD_MANAGER: &str = "pgfleet-testkit";
/// Name of the admin user in the token file.
const ADMIN_USER: &str = "pgfleet-testkit-admin";
/// Service CIDR handed to kube-apiserver (never routed anywhere).
const SERVICE_CIDR: &str = "10.0.0.0/24";

/// A running local control plane: kine (in-memory etcd API) plus a real
/// kube-apiserver on free loopback ports, with generated credentials.
///
/// Dropping it kills both processes and removes its directory; see the
/// [module docs](self) for what runs and what does not.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    bin_dir: PathBuf,
    kubectl: PathBuf,
    port: u16,
    kine_port: u16,
    token: String,
    kubeconfig: PathBuf,
    ca_cert: PathBuf,
    apiserver_log: PathBuf,
    kine_log: PathBuf,
    kine: Option<Child>,
    apiserver: Option<Child>,
    watchdog: Option<Watchdog>,
}

impl ControlPlane {
    /// Build the binaries if they are not cached yet (via
    /// `testkit/k8s/build-control-plane.sh`), start kine and kube-apiserver
    /// on free loopback ports, and return once `/readyz` answers `ok`
    /// (bounded: 60 s per attempt, three attempts with fresh ports).
    ///
    /// Torn down on Drop, and by a watchdog if the process dies first.
    ///
    /// Panics with the build script's output if the build fails, or with the
    /// tail of the apiserver log if it does not become ready.
    pub fn start() -> ControlPlane {
        match ControlPlane::launch() {
            Ok(cp) => cp,
            Err(err) => {
                panic!("pgfleet-testkit: could not start the Kubernetes control plane:\n{err}")
            }
        }
    }

    /// One control plane per test process, started on first use and shared
    /// by every test in the binary (like [`crate::PgServer::shared`]).
    ///
    /// Tests sharing it must not assume an empty cluster: use their own
    /// namespaces and unique names. It is never dropped; the watchdog kills
    /// it and removes its directory when the process exits.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        match SHARED.get_or_init(ControlPlane::launch) {
            Ok(cp) => cp,
            Err(err) => panic!(
                "pgfleet-testkit: could not start the shared Kubernetes control plane:\n{err}"
            ),
        }
    }

    /// Admin kubeconfig: server `https://127.0.0.1:<port>`, the CA embedded
    /// (TLS is verified), bearer-token user in group `system:masters`,
    /// namespace `default`. Suitable for `KUBECONFIG=` and for
    /// `kube::Config::from_custom_kubeconfig`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://{HOST}:{}", self.port)
    }

    /// The apiserver's secure port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// kine's port on `127.0.0.1` (etcd v3 API, plain HTTP/2).
    pub fn kine_port(&self) -> u16 {
        self.kine_port
    }

    /// Bearer token of the admin user (`system:masters`), random per start.
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// PEM file of the CA that signed the apiserver's serving certificate
    /// (generated per start). Clients should trust it rather than skip TLS
    /// verification; the serving certificate is valid for `127.0.0.1`,
    /// `localhost` and the in-cluster `kubernetes.default.svc` names.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// Directory holding the built `kube-apiserver` and `kine`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The control plane's private directory (logs, keys, kubeconfigs);
    /// removed on Drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kube-apiserver log (stdout and stderr), e.g. for failure messages.
    pub fn apiserver_log(&self) -> &Path {
        &self.apiserver_log
    }

    /// The last `lines` lines of the kube-apiserver log.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        log_tail(&self.apiserver_log, lines)
    }

    /// Kubeconfig whose user is ServiceAccount `namespace/name`, for RBAC
    /// tests: the namespace and ServiceAccount are created (server-side
    /// apply) if missing, a 24 h token is requested through the TokenRequest
    /// API (`kubectl create token`), and a kubeconfig using it is written in
    /// the control plane's directory. Each call writes a new file.
    ///
    /// The identity has no permissions until a test grants some with a Role
    /// or ClusterRole binding.
    pub fn kubeconfig_for_service_account(&self, namespace: &str, name: &str) -> PathBuf {
        self.apply_yaml(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {}\n  namespace: {}\n",
            yaml_string(namespace),
            yaml_string(name),
            yaml_string(namespace),
        ));
        let token = self.kubectl(&["create", "token", name, "-n", namespace, "--duration=24h"]);
        let token = token.trim();
        assert!(
            !token.is_empty(),
            "kubectl create token {name} -n {namespace} printed no token"
        );
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("sa-{namespace}-{name}-{n}.kubeconfig"));
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let contents = self.kubeconfig_text(&user, token, namespace);
        if let Err(err) = write_private(&path, &contents) {
            panic!("writing {}: {err}", path.display());
        }
        path
    }

    /// Run `kubectl` with the admin kubeconfig; returns stdout (trailing
    /// whitespace trimmed) or panics with kubectl's stderr.
    pub fn kubectl(&self, args: &[&str]) -> String {
        match self.try_kubectl(args) {
            Ok(out) => out,
            Err(err) => panic!("{err}"),
        }
    }

    /// Like [`ControlPlane::kubectl`], returning `Err` (naming the command,
    /// its exit status and stderr) instead of panicking.
    pub fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.run_kubectl(&self.kubeconfig, args, None)
    }

    /// Run `kubectl` with another kubeconfig, e.g. one from
    /// [`ControlPlane::kubeconfig_for_service_account`].
    pub fn try_kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
        self.run_kubectl(kubeconfig, args, None)
    }

    /// `kubectl apply --server-side --force-conflicts -f -` of `yaml` (one or
    /// more documents) as the admin, with field manager `pgfleet-testkit`;
    /// when it holds CustomResourceDefinitions, waits (up to 60 s) until
    /// they are `Established`, so objects of them can be created at once.
    ///
    /// Panics with kubectl's stderr and the YAML on failure.
    pub fn apply_yaml(&self, yaml: &str) {
        if let Err(err) = self.try_apply_yaml(yaml) {
            panic!("apply_yaml failed: {err}\n--- YAML ---\n{yaml}");
        }
    }

    /// Like [`ControlPlane::apply_yaml`], returning kubectl's error instead
    /// of panicking (for tests that expect validation to reject an object).
    /// Returns the applied objects as `kubectl -o name` prints them.
    pub fn try_apply_yaml(&self, yaml: &str) -> Result<Vec<String>, String> {
        let field_manager = format!("--field-manager={FIELD_MANAGER}");
        let out = self.run_kubectl(
            &self.kubeconfig,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                &field_manager,
                "-o",
                "name",
                "-f",
                "-",
            ],
            Some(yaml),
        )?;
        let applied: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
        let crds: Vec<&str> = applied
            .iter()
            .map(String::as_str)
            .filter(|name| name.starts_with("customresourcedefinition.apiextensions.k8s.io/"))
            .collect();
        if !crds.is_empty() {
            let timeout = format!("--timeout={ESTABLISHED_TIMEOUT}");
            let mut args = vec!["wait", "--for=condition=Established", &timeout];
            args.extend(crds);
            self.run_kubectl(&self.kubeconfig, &args, None)?;
        }
        Ok(applied)
    }

    // ----- internals -----

    fn launch() -> Result<ControlPlane, String> {
        let started = Instant::now();
        let bin_dir = control_plane_bin_dir()?;
        let kubectl = find_kubectl()?;
        let dir = create_control_plane_dir()?;
        // Spawned before any server, so even a half-started control plane is
        // cleaned up if this process dies.
        let watchdog = Watchdog::spawn(&dir)?;
        let mut cp = ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            ca_cert: dir.join("pki").join("ca.crt"),
            apiserver_log: dir.join("kube-apiserver.log"),
            kine_log: dir.join("kine.log"),
            dir,
            bin_dir,
            kubectl,
            port: 0,
            kine_port: 0,
            token: random_hex(24)?,
            kine: None,
            apiserver: None,
            watchdog: Some(watchdog),
        };
        // On any error below, `cp` is dropped, which kills what was started
        // and removes the directory.
        cp.generate_credentials()?;
        cp.start_kine()?;
        cp.start_apiserver()?;
        let _ = writeln!(
            std::io::stderr(),
            "pgfleet-testkit: Kubernetes v{K8S_VERSION} control plane ready at {} in {:.1} s \
             (kubeconfig {})",
            cp.server_url(),
            started.elapsed().as_secs_f64(),
            cp.kubeconfig.display()
        );
        Ok(cp)
    }

    /// CA + serving certificate, ServiceAccount key pair, token file.
    fn generate_credentials(&self) -> Result<(), String> {
        let pki = self.dir.join("pki");
        create_private_dir(&pki)?;
        let ossl = |args: &[&str], what: &str| -> Result<(), String> {
            let mut cmd = Command::new("openssl");
            cmd.args(args).current_dir(&pki);
            run(&mut cmd, what).map(|_| ())
        };
        let ec_key = |file: &str| {
            ossl(
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    file,
                ],
                &format!("openssl genpkey ({file})"),
            )
        };
        ec_key("ca.key")?;
        ossl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "3650",
                "-subj",
                "/CN=pgfleet-testkit-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            "openssl req (CA)",
        )?;
        ec_key("apiserver.key")?;
        ossl(
            &[
                "req",
                "-new",
                "-key",
                "apiserver.key",
                "-out",
                "apiserver.csr",
                "-subj",
                "/CN=kube-apiserver",
            ],
            "openssl req (serving certificate)",
        )?;
        write_private(
            &pki.join("apiserver.ext"),
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,\
             DNS:kubernetes.default,DNS:kubernetes.default.svc,\
             DNS:kubernetes.default.svc.cluster.local\n",
        )?;
        let serial = format!("0x{}", random_hex(16)?);
        ossl(
            &[
                "x509",
                "-req",
                "-in",
                "apiserver.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "3650",
                "-extfile",
                "apiserver.ext",
                "-out",
                "apiserver.crt",
            ],
            "openssl x509 (sign serving certificate)",
        )?;
        ec_key("sa.key")?;
        ossl(
            &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
            "openssl pkey -pubout (ServiceAccount key)",
        )?;
        write_private(
            &self.dir.join("tokens.csv"),
            &format!(
                "{},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n",
                self.token
            ),
        )
    }

    fn start_kine(&mut self) -> Result<(), String> {
        let mut errors = String::new();
        for attempt in 1..=START_ATTEMPTS {
            self.kine_port = free_port()?;
            let log = open_log(&self.kine_log)?;
            let mut cmd = Command::new(self.bin_dir.join("kine"));
            cmd.arg(format!("--listen-address={HOST}:{}", self.kine_port))
                .arg("--endpoint=memory://")
                .arg("--metrics-bind-address=0");
            let child = self.spawn_server(cmd, log, "kine")?;
            let child = self.kine.insert(child);
            match wait_for_tcp(child, self.kine_port, KINE_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(err) => {
                    let _ = writeln!(
                        errors,
                        "kine attempt {attempt} (port {}): {err}\n{}",
                        self.kine_port,
                        log_tail(&self.kine_log, 20)
                    );
                    kill_and_reap(&mut self.kine);
                }
            }
        }
        Err(errors)
    }

    fn start_apiserver(&mut self) -> Result<(), String> {
        let mut errors = String::new();
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_port()?;
            write_private(
                &self.kubeconfig,
                &self.kubeconfig_text(ADMIN_USER, &self.token, "default"),
            )?;
            let log = open_log(&self.apiserver_log)?;
            let pki = self.dir.join("pki");
            let path = |p: PathBuf| p.to_string_lossy().into_owned();
            let issuer = self.server_url();
            let args = [
                format!("--etcd-servers=http://{HOST}:{}", self.kine_port),
                format!("--advertise-address={HOST}"),
                format!("--bind-address={HOST}"),
                format!("--secure-port={}", self.port),
                format!("--cert-dir={}", path(self.dir.join("certs"))),
                format!("--tls-cert-file={}", path(pki.join("apiserver.crt"))),
                format!("--tls-private-key-file={}", path(pki.join("apiserver.key"))),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--allow-privileged=true".to_string(),
                "--disable-admission-plugins=ServiceAccount".to_string(),
                "--authorization-mode=RBAC".to_string(),
                format!("--token-auth-file={}", path(self.dir.join("tokens.csv"))),
                format!("--service-account-issuer={issuer}"),
                format!("--api-audiences={issuer}"),
                format!("--service-account-key-file={}", path(pki.join("sa.pub"))),
                format!(
                    "--service-account-signing-key-file={}",
                    path(pki.join("sa.key"))
                ),
                // 127.0.0.1 is not a valid Endpoints address; nothing routes
                // to the `kubernetes` Service here anyway.
                "--endpoint-reconciler-type=none".to_string(),
                "--profiling=false".to_string(),
            ];
            let mut cmd = Command::new(self.bin_dir.join("kube-apiserver"));
            cmd.args(&args);
            let child = self.spawn_server(cmd, log, "kube-apiserver")?;
            self.apiserver = Some(child);
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(err) => {
                    let _ = writeln!(
                        errors,
                        "kube-apiserver attempt {attempt} (port {}): {err}\n{}",
                        self.port,
                        log_tail(&self.apiserver_log, 40)
                    );
                    let exited = self
                        .apiserver
                        .as_mut()
                        .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                    kill_and_reap(&mut self.apiserver);
                    // Only a crash (e.g. the port was taken in between) is
                    // worth another port; a timeout would just repeat.
                    if !exited {
                        break;
                    }
                }
            }
        }
        Err(errors)
    }

    /// Poll until `/readyz` says ok, the process exits, or the timeout.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("(not polled yet)");
        loop {
            if let Some(child) = self.apiserver.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("kube-apiserver exited early ({status})"));
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                match self.run_kubectl(
                    &self.kubeconfig,
                    &["get", "--raw=/readyz", "--request-timeout=5s"],
                    None,
                ) {
                    Ok(out) if out.trim() == "ok" => return Ok(()),
                    Ok(out) => last = out,
                    Err(err) => last = err,
                }
            }
            if Instant::now() >= deadline {
                let verbose = self
                    .run_kubectl(
                        &self.kubeconfig,
                        &["get", "--raw=/readyz?verbose", "--request-timeout=5s"],
                        None,
                    )
                    .unwrap_or_else(|e| e);
                return Err(format!(
                    "/readyz not ok after {} s; last answer: {last}\n/readyz?verbose: {verbose}",
                    READY_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Spawn a server process in the control plane's directory, in its own
    /// process group, output to `log`, and register it with the watchdog.
    fn spawn_server(
        &mut self,
        mut cmd: Command,
        log: std::fs::File,
        what: &str,
    ) -> Result<Child, String> {
        let err_log = log
            .try_clone()
            .map_err(|e| format!("duplicating the {what} log handle: {e}"))?;
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawning {:?}: {e}", cmd.get_program()))?;
        if let Some(watchdog) = self.watchdog.as_mut() {
            watchdog.register(child.id());
        }
        Ok(child)
    }

    fn run_kubectl(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, String> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!(
                "--cache-dir={}",
                self.dir.join("kubectl-cache").display()
            ))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let describe = || format!("kubectl {}", args.join(" "));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{}: cannot run {}: {e}", describe(), self.kubectl.display()))?;
        let input = child.stdin.take();
        // Feed stdin from another thread so a large output cannot deadlock.
        let output = std::thread::scope(|scope| {
            if let (Some(mut pipe), Some(text)) = (input, stdin) {
                scope.spawn(move || {
                    // kubectl exiting early closes the pipe; its stderr says why.
                    let _ = pipe.write_all(text.as_bytes());
                });
            }
            child.wait_with_output()
        })
        .map_err(|e| format!("{}: waiting for kubectl: {e}", describe()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_string())
        } else {
            Err(format!(
                "{} failed ({}): {}",
                describe(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    fn kubeconfig_text(&self, user: &str, token: &str, namespace: &str) -> String {
        let ca = std::fs::read(&self.ca_cert).unwrap_or_default();
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: pgfleet-testkit\n  \
               cluster:\n    \
                 server: {server}\n    \
                 certificate-authority-data: {ca}\n\
             users:\n\
             - name: {user}\n  \
               user:\n    \
                 token: {token}\n\
             contexts:\n\
             - name: pgfleet-testkit\n  \
               context:\n    \
                 cluster: pgfleet-testkit\n    \
                 user: {user}\n    \
                 namespace: {namespace}\n\
             current-context: pgfleet-testkit\n",
            server = self.server_url(),
            ca = base64(&ca),
            user = yaml_string(user),
            token = yaml_string(token),
            namespace = yaml_string(namespace),
        )
    }
}

impl Drop for ControlPlane {
    /// Kill kube-apiserver and kine (storage is in memory: nothing to keep),
    /// disarm the watchdog and remove the directory. Never panics.
    fn drop(&mut self) {
        kill_and_reap(&mut self.apiserver);
        kill_and_reap(&mut self.kine);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
        let mut result = std::fs::remove_dir_all(&self.dir);
        for _ in 0..5 {
            if result.is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
            result = std::fs::remove_dir_all(&self.dir);
        }
        if let Err(err) = result {
            let _ = writeln!(
                std::io::stderr(),
                "pgfleet-testkit: removing {}: {err}",
                self.dir.display()
            );
        }
    }
}

/// `sh` in its own process group (so a Ctrl-C aimed at the test run does not
/// kill it first), ignoring hang-up/interrupt/terminate, reading commands
/// from a pipe whose write end only this process holds (close-on-exec):
/// `pid N` registers a server, `disarm` makes it exit quietly. On EOF, i.e.
/// when this process is gone however it died, it SIGKILLs every registered
/// server still running in the control plane's directory (the cwd check
/// guards against a recycled pid) and removes the directory.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    pipe: ChildStdin,
}

impl Watchdog {
    fn spawn(dir: &Path) -> Result<Watchdog, String> {
        const SCRIPT: &str = r#"
trap '' HUP INT QUIT TERM PIPE
cd /
dir=$1
pids=
while read -r cmd arg; do
    case $cmd in
    pid) pids="$pids $arg" ;;
    disarm) exit 0 ;;
    esac
done
for p in $pids; do
    if [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$dir" ]; then
        kill -KILL "$p" 2>/dev/null
    fi
done
sleep 0.2
rm -rf "$dir"
"#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("pgfleet-testkit-kube-watchdog")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawning the control plane watchdog (sh): {e}"))?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| "watchdog has no stdin pipe".to_string())?;
        Ok(Watchdog { child, pipe })
    }

    fn register(&mut self, pid: u32) {
        if let Err(err) = writeln!(self.pipe, "pid {pid}") {
            let _ = writeln!(
                std::io::stderr(),
                "pgfleet-testkit: telling the watchdog about pid {pid}: {err}"
            );
        }
    }

    fn disarm(mut self) {
        let _ = writeln!(self.pipe, "disarm");
        drop(self.pipe);
        let _ = self.child.wait();
    }
}

/// Build (or find cached) binaries once per process; the build script is
/// idempotent and cheap when the cache is complete.
fn control_plane_bin_dir() -> Result<PathBuf, String> {
    static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN_DIR.get_or_init(run_build_script).clone()
}

/// Path of `build-control-plane.sh` in this crate.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("k8s")
        .join("build-control-plane.sh")
}

/// Run the build script, echoing its progress (stderr) to this process's
/// stderr as it comes, and return the bin dir from its last stdout line.
fn run_build_script() -> Result<PathBuf, String> {
    let script = build_script();
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    let stderr = child.stderr.take();
    let mut stdout = child.stdout.take();
    let (err_text, out_text) = std::thread::scope(|scope| {
        let echo = scope.spawn(move || {
            let mut all = String::new();
            if let Some(pipe) = stderr {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    // Straight to fd 2: the test harness does not capture it,
                    // so a long first build shows its progress.
                    let _ = writeln!(std::io::stderr(), "{line}");
                    all.push_str(&line);
                    all.push('\n');
                }
            }
            all
        });
        let mut out = String::new();
        if let Some(pipe) = stdout.as_mut() {
            let _ = pipe.read_to_string(&mut out);
        }
        (echo.join().unwrap_or_default(), out)
    });
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {}: {e}", script.display()))?;
    if !status.success() {
        let lines: Vec<&str> = err_text.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        return Err(format!(
            "{} failed ({status}) after {:.0} s\n--- stderr (last 60 lines) ---\n{tail}\n\
             --- stdout ---\n{}",
            script.display(),
            started.elapsed().as_secs_f64(),
            out_text.trim()
        ));
    }
    let bin_dir = out_text
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("{} printed no bin dir", script.display()))?;
    for tool in ["kube-apiserver", "kine"] {
        if !bin_dir.join(tool).is_file() {
            return Err(format!(
                "{} reported {} but it has no {tool}",
                script.display(),
                bin_dir.display()
            ));
        }
    }
    Ok(bin_dir)
}

fn find_kubectl() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| "kubectl not found on PATH (or set KUBECTL)".to_string())
}

/// Wait until `port` accepts TCP connections, failing early if `child` exits.
fn wait_for_tcp(child: &mut Child, port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early ({status})"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not accepting connections after {} s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_and_reap(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A fresh private directory `$TMPDIR/pgfleet-kube-<pid>-<n>`, canonical
/// (the watchdog compares it with `/proc/<pid>/cwd`).
fn create_control_plane_dir() -> Result<PathBuf, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let base = base.canonicalize().unwrap_or(base);
    let pid = std::process::id();
    for _ in 0..100 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("pgfleet-kube-{pid}-{n}-{nanos:x}"));
        match create_private_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(_) if dir.exists() => continue,
            Err(err) => return Err(err),
        }
    }
    Err(format!(
        "could not create a unique directory in {}",
        base.display()
    ))
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))
}

/// Write a file readable only by its owner (keys, tokens, kubeconfigs).
fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn open_log(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

/// Run a command to completion; Err describes the failure with its output.
fn run(cmd: &mut Command, what: &str) -> Result<std::process::Output, String> {
    cmd.stdin(Stdio::null());
    let output = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}

/// A free loopback TCP port: bind port 0, read it, release it. Racy by
/// nature, hence the start retries.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((HOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a free port on {HOST}: {e}"))
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(buf.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Standard base64 with padding (for `certificate-authority-data`).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A YAML double-quoted scalar.
fn yaml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want, "base64({input:?})");
        }
    }

    #[test]
    fn yaml_strings_are_quoted() {
        assert_eq!(yaml_string("abc"), "\"abc\"");
        assert_eq!(yaml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(yaml_string("a\nb"), "\"a\\x0ab\"");
    }

    #[test]
    fn build_script_is_in_the_crate() {
        assert!(build_script().is_file(), "{}", build_script().display());
    }
}
