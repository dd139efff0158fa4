//! Integration tests for the local Kubernetes control plane: a real
//! kube-apiserver (built from `k8s.io/kubernetes`) over kine, never a mock.
//!
//! The first run builds the binaries (many minutes on two cores) through
//! `testkit/k8s/build-control-plane.sh`; a failed build fails these tests
//! with the script's output. Nothing here is skipped.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgfleet_testkit::kube::{ControlPlane, K8S_VERSION};

/// Set in the child process of `watchdog_cleans_up_after_the_process_dies`.
const CHILD_ENV: &str = "PGFLEET_TESTKIT_KUBE_WATCHDOG_CHILD";

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Poll `f` until it returns true or `timeout` passes.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readyz_and_livez_are_ok() {
    let cp = ControlPlane::shared();
    assert_eq!(cp.kubectl(&["get", "--raw=/readyz"]), "ok");
    assert_eq!(cp.kubectl(&["get", "--raw=/livez"]), "ok");
    assert!(cp.server_url().starts_with("https://127.0.0.1:"));
    assert_eq!(cp.server_url(), format!("https://127.0.0.1:{}", cp.port()));
}

#[test]
fn server_reports_the_pinned_version() {
    let cp = ControlPlane::shared();
    let out = cp.kubectl(&["version"]);
    let want = format!("Server Version: v{K8S_VERSION}");
    assert!(
        out.lines().any(|l| l.trim() == want),
        "`kubectl version` should report {want:?}, got:\n{out}"
    );
    let raw = cp.kubectl(&["get", "--raw=/version"]);
    assert!(
        raw.contains(&format!("\"gitVersion\": \"v{K8S_VERSION}\"")),
        "/version: {raw}"
    );
}

#[test]
fn tls_verifies_against_the_generated_ca() {
    let cp = ControlPlane::shared();
    // openssl checks the chain and that the certificate is valid for the IP.
    let out = Command::new("openssl")
        .args(["s_client", "-brief", "-verify_return_error", "-CAfile"])
        .arg(cp.ca_cert())
        .args(["-verify_ip", "127.0.0.1", "-connect"])
        .arg(format!("127.0.0.1:{}", cp.port()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl s_client failed:\n{text}");
    assert!(text.contains("Verification: OK"), "{text}");

    // A different CA must be refused: the kubeconfig really pins the CA.
    let other = cp.dir().join("other-ca.crt");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-subj",
            "/CN=unrelated",
            "-days",
            "1",
            "-out",
        ])
        .arg(&other)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let bad = Command::new("openssl")
        .args(["s_client", "-brief", "-verify_return_error", "-CAfile"])
        .arg(&other)
        .arg("-connect")
        .arg(format!("127.0.0.1:{}", cp.port()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "verification against an unrelated CA should fail"
    );

    let kubeconfig = std::fs::read_to_string(cp.kubeconfig()).unwrap();
    assert!(kubeconfig.contains("certificate-authority-data: "));
    assert!(!kubeconfig.contains("insecure-skip-tls-verify"));
    assert!(kubeconfig.contains(cp.admin_token()));
}

#[test]
fn admin_token_is_required() {
    let cp = ControlPlane::shared();
    // Same server and CA, wrong token: 401 from the real authenticator.
    let bogus = cp.dir().join("bogus.kubeconfig");
    let text = std::fs::read_to_string(cp.kubeconfig())
        .unwrap()
        .replace(cp.admin_token(), "not-the-token");
    std::fs::write(&bogus, text).unwrap();
    let err = cp
        .try_kubectl_with(&bogus, &["get", "namespaces"])
        .unwrap_err();
    // kubectl renders a 401 as "You must be logged in to the server".
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in to the server"),
        "{err}"
    );
    let me = cp.kubectl(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"]);
    assert!(me.contains("system:masters"), "{me}");
}

#[test]
fn namespace_and_configmap_round_trip() {
    let cp = ControlPlane::shared();
    cp.kubectl(&["create", "namespace", "cm-roundtrip"]);
    cp.kubectl(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "cm-roundtrip",
        "--from-literal=pool_mode=transaction",
        "--from-literal=max_client_conn=500",
    ]);
    let mode = cp.kubectl(&[
        "get",
        "configmap",
        "settings",
        "-n",
        "cm-roundtrip",
        "-o",
        "jsonpath={.data.pool_mode}",
    ]);
    assert_eq!(mode, "transaction");
    let conns = cp.kubectl(&[
        "get",
        "configmap",
        "settings",
        "-n",
        "cm-roundtrip",
        "-o",
        "jsonpath={.data.max_client_conn}",
    ]);
    assert_eq!(conns, "500");
    // It is stored, not echoed: a second read through a list sees it too.
    let names = cp.kubectl(&[
        "get",
        "configmaps",
        "-n",
        "cm-roundtrip",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert!(names.split_whitespace().any(|n| n == "settings"), "{names}");
    let err = cp
        .try_kubectl(&["get", "configmap", "missing", "-n", "cm-roundtrip"])
        .unwrap_err();
    assert!(err.contains("NotFound"), "{err}");
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testkit.pgfleet.io
spec:
  group: testkit.pgfleet.io
  scope: Namespaced
  names:
    kind: Widget
    plural: widgets
    singular: widget
    listKind: WidgetList
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources:
        status: {}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size:
                  type: integer
                  minimum: 1
                  maximum: 10
            status:
              type: object
              properties:
                ready:
                  type: boolean
"#;

#[test]
fn crd_becomes_established_and_serves_objects() {
    let cp = ControlPlane::shared();
    cp.apply_yaml(WIDGET_CRD);
    // apply_yaml waited for it; check the condition ourselves too.
    let established = cp.kubectl(&[
        "get",
        "crd",
        "widgets.testkit.pgfleet.io",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
    ]);
    assert_eq!(established, "True");

    cp.apply_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: crd-objects\n---\n\
         apiVersion: testkit.pgfleet.io/v1alpha1\nkind: Widget\nmetadata:\n  \
         name: first\n  namespace: crd-objects\nspec:\n  size: 3\n",
    );
    let size = cp.kubectl(&[
        "get",
        "widgets.testkit.pgfleet.io",
        "first",
        "-n",
        "crd-objects",
        "-o",
        "jsonpath={.spec.size}",
    ]);
    assert_eq!(size, "3");

    // The schema is enforced by the real apiserver.
    let err = cp
        .try_apply_yaml(
            "apiVersion: testkit.pgfleet.io/v1alpha1\nkind: Widget\nmetadata:\n  \
             name: too-big\n  namespace: crd-objects\nspec:\n  size: 11\n",
        )
        .unwrap_err();
    assert!(err.contains("spec.size"), "{err}");

    // The status subresource works (tests patch status themselves).
    cp.kubectl(&[
        "patch",
        "widgets.testkit.pgfleet.io",
        "first",
        "-n",
        "crd-objects",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"ready":true}}"#,
    ]);
    let ready = cp.kubectl(&[
        "get",
        "widgets.testkit.pgfleet.io",
        "first",
        "-n",
        "crd-objects",
        "-o",
        "jsonpath={.status.ready}",
    ]);
    assert_eq!(ready, "true");
}

#[test]
fn service_account_is_forbidden_until_rbac_grants_access() {
    let cp = ControlPlane::shared();
    let ns = "rbac-secrets";
    let sa_config = cp.kubeconfig_for_service_account(ns, "reader");
    cp.kubectl(&[
        "create",
        "secret",
        "generic",
        "db-password",
        "-n",
        ns,
        "--from-literal=password=hunter2",
    ]);

    let who = cp
        .try_kubectl_with(
            &sa_config,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        )
        .unwrap();
    assert_eq!(who, format!("system:serviceaccount:{ns}:reader"));

    let denied = cp
        .try_kubectl_with(&sa_config, &["get", "secrets", "-n", ns])
        .unwrap_err();
    assert!(denied.contains("Forbidden"), "{denied}");
    let denied = cp
        .try_kubectl_with(&sa_config, &["get", "secret", "db-password", "-n", ns])
        .unwrap_err();
    assert!(denied.contains("Forbidden"), "{denied}");

    cp.apply_yaml(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  \
         name: secret-reader\n  namespace: {ns}\nrules:\n- apiGroups: [\"\"]\n  \
         resources: [secrets]\n  verbs: [get, list]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  \
         name: secret-reader\n  namespace: {ns}\nroleRef:\n  \
         apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: secret-reader\n\
         subjects:\n- kind: ServiceAccount\n  name: reader\n  namespace: {ns}\n"
    ));

    // The RBAC authorizer reads bindings from an informer: allow a moment.
    let mut last = String::new();
    let allowed = eventually(Duration::from_secs(15), || {
        match cp.try_kubectl_with(
            &sa_config,
            &[
                "get",
                "secrets",
                "-n",
                ns,
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
        ) {
            Ok(names) => {
                last = names;
                true
            }
            Err(err) => {
                last = err;
                false
            }
        }
    });
    assert!(allowed, "still refused after the RoleBinding: {last}");
    assert_eq!(last, "db-password");
    let password = cp
        .try_kubectl_with(
            &sa_config,
            &[
                "get",
                "secret",
                "db-password",
                "-n",
                ns,
                "-o",
                "jsonpath={.data.password}",
            ],
        )
        .unwrap();
    assert_eq!(password, "aHVudGVyMg==");

    // The grant is namespaced and read-only.
    let err = cp
        .try_kubectl_with(&sa_config, &["get", "secrets", "-n", "default"])
        .unwrap_err();
    assert!(err.contains("Forbidden"), "{err}");
    let err = cp
        .try_kubectl_with(
            &sa_config,
            &["delete", "secret", "db-password", "-n", ns, "--wait=false"],
        )
        .unwrap_err();
    assert!(err.contains("Forbidden"), "{err}");
}

#[test]
fn shared_returns_one_instance() {
    let a = ControlPlane::shared();
    let b = std::thread::spawn(|| ControlPlane::shared() as *const ControlPlane as usize)
        .join()
        .unwrap();
    assert_eq!(a as *const ControlPlane as usize, b);
    assert!(std::ptr::eq(a, ControlPlane::shared()));
    assert_eq!(a.server_url(), ControlPlane::shared().server_url());
}

#[test]
fn dedicated_control_plane_is_isolated_and_torn_down_on_drop() {
    let started = Instant::now();
    let cp = ControlPlane::start();
    eprintln!(
        "dedicated control plane started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let shared = ControlPlane::shared();
    assert_ne!(cp.port(), shared.port());
    assert_ne!(cp.admin_token(), shared.admin_token());
    assert_eq!(cp.kubectl(&["get", "--raw=/readyz"]), "ok");
    // Its own storage: a namespace created here is not in the shared one.
    cp.kubectl(&["create", "namespace", "only-in-dedicated"]);
    let err = shared
        .try_kubectl(&["get", "namespace", "only-in-dedicated"])
        .unwrap_err();
    assert!(err.contains("NotFound"), "{err}");

    let dir = cp.dir().to_path_buf();
    let (port, kine_port) = (cp.port(), cp.kine_port());
    assert!(dir.is_dir());
    drop(cp);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!port_open(port), "kube-apiserver still listening on {port}");
    assert!(!port_open(kine_port), "kine still listening on {kine_port}");
}

/// Not a test on its own: the child half of
/// `watchdog_cleans_up_after_the_process_dies` (does nothing unless
/// `CHILD_ENV` is set).
#[test]
fn watchdog_child_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cp = ControlPlane::start();
    println!(
        "CHILD-CP dir={} port={} kine_port={}",
        cp.dir().display(),
        cp.port(),
        cp.kine_port()
    );
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn watchdog_cleans_up_after_the_process_dies() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["watchdog_child_process", "--exact", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("CHILD-CP "));
    let Some(line) = line else {
        let status = child.wait().unwrap();
        panic!("child exited ({status}) without starting a control plane");
    };
    let field = |key: &str| -> String {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{key}=")))
            .unwrap()
            .to_string()
    };
    let dir = PathBuf::from(field("dir"));
    let port: u16 = field("port").parse().unwrap();
    let kine_port: u16 = field("kine_port").parse().unwrap();
    assert!(dir.is_dir());
    assert!(port_open(port) && port_open(kine_port));

    // SIGKILL: no destructor, no unwinding; only the watchdog can clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = eventually(Duration::from_secs(15), || {
        !Path::new(&dir).exists() && !port_open(port) && !port_open(kine_port)
    });
    assert!(
        gone,
        "after the process died: dir exists={}, apiserver port open={}, kine port open={}",
        dir.exists(),
        port_open(port),
        port_open(kine_port)
    );
}
