//! The Helm chart (`charts/pgfleet`) with a real helm (built from its Go module by
//! `testkit/helm/build-helm.sh`) and a real kube-apiserver (testkit's control plane):
//!
//! - `helm lint` (also `--strict`) passes with the default and with non-default values;
//! - what `helm template` renders is accepted by the API server (server-side dry-run, strict
//!   field validation), with the CRDs the chart ships installed;
//! - the rendered operator Deployment passes exactly the operator's CLI contract;
//! - values.schema.json refuses wrong types and unknown options with a readable message;
//! - the rendered RBAC, applied for real, lets the operator's ServiceAccount do everything the
//!   operator does (checked with `kubectl auth can-i` and by running the PoolerFleet
//!   reconcile as that ServiceAccount) and nothing more (no nodes, no pods/exec, no other
//!   Leases).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use pgfleet_testkit::helm::{helm, run_helm};
use pgfleet_testkit::kube::ControlPlane;
use serde::Deserialize;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn chart_dir() -> String {
    repo_root()
        .join("charts")
        .join("pgfleet")
        .to_string_lossy()
        .into_owned()
}

/// The shared control plane with the chart's own CRD files applied (what `helm install`
/// installs from `crds/`).
fn cp() -> &'static ControlPlane {
    static CRDS: Once = Once::new();
    let cp = ControlPlane::shared();
    CRDS.call_once(|| {
        let dir = repo_root().join("charts").join("pgfleet").join("crds");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("charts/pgfleet/crds")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        assert!(files.len() >= 2, "CRD files in {}", dir.display());
        for file in files {
            cp.apply_yaml(&std::fs::read_to_string(&file).expect("CRD file"));
        }
    });
    cp
}

/// A name unique in this test process, e.g. for namespaces and releases.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn fresh_namespace(prefix: &str) -> String {
    let ns = unique(prefix);
    cp().apply_yaml(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    ));
    ns
}

/// Writes `contents` to a file in the control plane's directory and returns its path.
fn temp_file(name: &str, contents: &str) -> String {
    let path = cp().dir().join(unique(name));
    std::fs::write(&path, contents).expect("write temp file");
    path.to_string_lossy().into_owned()
}

/// `helm template <release> charts/pgfleet -n <namespace> [-f values]`.
fn render(release: &str, namespace: &str, values: Option<&str>) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
    ];
    let file;
    if let Some(values) = values {
        file = temp_file("values.yaml", values);
        args.extend(["-f", file.as_str()]);
    }
    helm(&args)
}

/// The rendered documents, parsed.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind} expected");
    found[0]
}

/// `kubectl apply --server-side --dry-run=server` of `yaml` (strict field validation, so an
/// unknown or misplaced field fails too).
fn server_dry_run(yaml: &str) -> Result<String, String> {
    let file = temp_file("manifests.yaml", yaml);
    cp().try_kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=pgfleet-chart-test",
        "--validate=strict",
        "-f",
        &file,
    ])
}

/// Non-default values: a default fleet in another namespace, one operator replica without
/// leader election, one watched namespace, an existing ServiceAccount name.
fn custom_values(fleet_ns: &str, watch_ns: &str) -> String {
    format!(
        r#"
fullnameOverride: pgf-custom
operator:
  replicas: 1
  watchNamespace: {watch_ns}
  leaderElection:
    enabled: false
  logFormat: text
  logLevel: debug,pgfleet_operator=trace
  image:
    repository: registry.example/pgfleet-operator
    tag: dev
    pullPolicy: Always
  imagePullSecrets: [{{name: regcred}}]
  metrics:
    port: 9090
    service:
      enabled: false
  nodeSelector: {{kubernetes.io/os: linux}}
  tolerations: [{{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}}]
  priorityClassName: system-cluster-critical
  podAnnotations: {{example.com/team: db}}
  extraEnv: [{{name: RUST_BACKTRACE, value: "1"}}]
pooler:
  image:
    repository: registry.example/pgfleet-pooler
    tag: dev
serviceAccount:
  name: pgfleet-op
  annotations: {{example.com/role: operator}}
defaultFleet:
  enabled: true
  name: shared
  namespace: {fleet_ns}
  replicas: 3
  resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
  service: {{type: LoadBalancer, annotations: {{example.com/lb: internal}}}}
  allowedTenantNamespaces: ["*"]
"#
    )
}

#[test]
fn helm_lint_passes_with_default_and_custom_values() {
    let chart = chart_dir();
    let out = helm(&["lint", &chart]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let out = helm(&["lint", "--strict", &chart]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let values = temp_file("custom.yaml", &custom_values("db", "apps"));
    let out = helm(&["lint", "--strict", &chart, "-f", &values]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn default_render_is_accepted_by_the_api_server() {
    let ns = fresh_namespace("pgf-chart-default");
    let yaml = render("pgfleet", &ns, None);
    let docs = documents(&yaml);
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]),
        "default values create no PoolerFleet"
    );
    // Every namespaced object goes to the release namespace.
    for doc in &docs {
        if !doc["kind"].as_str().unwrap_or("").starts_with("Cluster") {
            assert_eq!(doc["metadata"]["namespace"], ns.as_str(), "{doc}");
        }
    }
    let out = server_dry_run(&yaml).expect("the API server accepts the default render");
    assert!(
        out.contains("deployment.apps/pgfleet serverside-applied (server dry run)"),
        "{out}"
    );
}

#[test]
fn render_with_crds_is_accepted_by_the_api_server() {
    let ns = fresh_namespace("pgf-chart-crds");
    let chart = chart_dir();
    let yaml = helm(&["template", "pgfleet", &chart, "-n", &ns, "--include-crds"]);
    let docs = documents(&yaml);
    let crds: Vec<&str> = find(&docs, "CustomResourceDefinition")
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(crds, ["poolerfleets.pgfleet.io", "tenants.pgfleet.io"]);
    server_dry_run(&yaml).expect("the API server accepts the chart with its CRDs");
}

#[test]
fn the_operator_deployment_follows_the_cli_contract() {
    let docs = documents(&render("pgfleet", "pgfleet-system", None));
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "pgfleet");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "pgfleet");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        spread["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/pgfleet/pgfleet-operator:0.1.0");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    assert_eq!(
        args,
        [
            "--admin-addr=0.0.0.0:8080",
            "--pooler-image=ghcr.io/pgfleet/pgfleet-pooler:0.1.0",
            "--lease-name=pgfleet-operator",
            "--lease-duration=15s",
            "--renew-deadline=10s",
            "--retry-period=2s",
            "--log-format=json",
            "--log=info",
        ]
    );
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("env name"), e))
        .collect();
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");

    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    let service = one(&docs, "Service");
    assert_eq!(service["metadata"]["name"], "pgfleet-metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn custom_values_render_what_they_say_and_are_accepted() {
    let release_ns = fresh_namespace("pgf-chart-custom");
    let fleet_ns = fresh_namespace("pgf-chart-fleet");
    let yaml = render(
        "custom",
        &release_ns,
        Some(&custom_values(&fleet_ns, "apps")),
    );
    let docs = documents(&yaml);

    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "pgf-custom");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(
        pod.get("topologySpreadConstraints").is_none(),
        "no spreading for one replica"
    );
    assert_eq!(pod["serviceAccountName"], "pgfleet-op");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/pgfleet-operator:dev");
    assert_eq!(container["imagePullPolicy"], "Always");
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    assert_eq!(
        args,
        [
            "--admin-addr=0.0.0.0:9090",
            "--pooler-image=registry.example/pgfleet-pooler:dev",
            "--namespace=apps",
            "--no-leader-election",
            "--log-format=text",
            "--log=debug,pgfleet_operator=trace",
        ]
    );
    assert_eq!(container["ports"][0]["containerPort"], 9090);
    assert!(
        find(&docs, "Service").is_empty(),
        "metrics Service disabled"
    );
    assert!(
        find(&docs, "Role").is_empty() && find(&docs, "RoleBinding").is_empty(),
        "no Lease Role without leader election"
    );
    let sa = one(&docs, "ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "pgfleet-op");
    assert_eq!(
        sa["metadata"]["annotations"]["example.com/role"],
        "operator"
    );
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"], "pgfleet-op");
    assert_eq!(binding["subjects"][0]["namespace"], release_ns.as_str());

    let fleet = one(&docs, "PoolerFleet");
    assert_eq!(fleet["metadata"]["name"], "shared");
    assert_eq!(fleet["metadata"]["namespace"], fleet_ns.as_str());
    assert_eq!(fleet["spec"]["replicas"], 3);
    assert_eq!(fleet["spec"]["service"]["type"], "LoadBalancer");
    assert_eq!(fleet["spec"]["allowedTenantNamespaces"][0], "*");

    server_dry_run(&yaml).expect("the API server accepts the custom render");
    // And for real: the PoolerFleet passes the CRD's validation and gets its defaults.
    let fleet_yaml = serde_yaml_ng::to_string(fleet).expect("fleet YAML");
    cp().apply_yaml(&fleet_yaml);
    let stored = cp().kubectl(&[
        "get",
        "poolerfleet",
        "shared",
        "-n",
        &fleet_ns,
        "-o",
        "jsonpath={.spec.ports.pooled}",
    ]);
    assert_eq!(stored, "6543");
}

#[test]
fn the_default_fleet_goes_to_the_release_namespace_by_default() {
    let docs = documents(&render(
        "pgfleet",
        "pgfleet-system",
        Some("defaultFleet: {enabled: true}\n"),
    ));
    let fleet = one(&docs, "PoolerFleet");
    assert_eq!(fleet["metadata"]["name"], "default");
    assert_eq!(fleet["metadata"]["namespace"], "pgfleet-system");
    assert_eq!(fleet["spec"]["replicas"], 2);
    assert_eq!(fleet["spec"]["service"]["type"], "ClusterIP");
}

#[test]
fn bad_values_are_refused_with_a_readable_message() {
    let chart = chart_dir();
    let cases: [(&[&str], &[&str]); 10] = [
        (
            &["--set-string", "operator.replicas=two"],
            &["/operator/replicas", "got string, want integer"],
        ),
        (
            &["--set", "operator.logFormat=xml"],
            &["/operator/logFormat", "'text', 'json'"],
        ),
        (
            &["--set", "operator.image.pullPolicy=Sometimes"],
            &[
                "/operator/image/pullPolicy",
                "'Always', 'IfNotPresent', 'Never'",
            ],
        ),
        (
            &["--set", "operator.replica=3"],
            &["/operator", "additional properties 'replica' not allowed"],
        ),
        (
            &["--set", "defaultFleet.service.type=Internal"],
            &[
                "/defaultFleet/service/type",
                "'ClusterIP', 'NodePort', 'LoadBalancer'",
            ],
        ),
        (
            &["--set", "operator.metrics.port=70000"],
            &["/operator/metrics/port", "maximum"],
        ),
        (
            &[
                "--set-string",
                "operator.leaderElection.leaseDuration=15 seconds",
            ],
            &["/operator/leaderElection/leaseDuration"],
        ),
        (
            &["--set", "defaultFleet.name=Main_Fleet"],
            &["/defaultFleet/name"],
        ),
        (
            &["--set", "operator.podDisruptionBudget.minAvailable=most"],
            &["/operator/podDisruptionBudget/minAvailable"],
        ),
        // Not a schema rule: two operators without a leader would fight.
        (
            &["--set", "operator.leaderElection.enabled=false"],
            &["operator.replicas > 1 needs operator.leaderElection.enabled"],
        ),
    ];
    for (set, expected) in cases {
        let mut args = vec!["template", "pgfleet", chart.as_str()];
        args.extend_from_slice(set);
        let out = run_helm(&args);
        assert!(!out.success, "{set:?} must be refused:\n{}", out.stdout);
        for text in expected {
            assert!(
                out.stderr.contains(text),
                "{set:?}: expected {text:?} in:\n{}",
                out.stderr
            );
        }
    }
    // helm lint reports the same.
    let out = run_helm(&["lint", &chart, "--set", "operator.logFormat=xml"]);
    assert!(!out.success);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("value must be one of 'text', 'json'"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
}

/// What the operator does, as (API group, resource, verbs): each must be allowed by the
/// chart's RBAC in any namespace, and the ClusterRole must grant nothing else.
const OPERATOR_NEEDS: &[(&str, &str, &[&str])] = &[
    (
        "pgfleet.io",
        "tenants",
        &["get", "list", "watch", "patch", "update"],
    ),
    (
        "pgfleet.io",
        "poolerfleets",
        &["get", "list", "watch", "patch", "update"],
    ),
    ("pgfleet.io", "tenants/status", &["get", "patch", "update"]),
    (
        "pgfleet.io",
        "poolerfleets/status",
        &["get", "patch", "update"],
    ),
    ("pgfleet.io", "tenants/finalizers", &["update"]),
    ("pgfleet.io", "poolerfleets/finalizers", &["update"]),
    (
        "",
        "secrets",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ),
    (
        "",
        "serviceaccounts",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ),
    (
        "",
        "services",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ),
    (
        "apps",
        "deployments",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ),
    (
        "policy",
        "poddisruptionbudgets",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ),
    (
        "rbac.authorization.k8s.io",
        "roles",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ),
    (
        "rbac.authorization.k8s.io",
        "rolebindings",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ),
    ("", "events", &["create", "patch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// `kubectl auth can-i` as `user` (in `namespace`, or in all namespaces): true for "yes",
/// false for "no". `resource` is `<resource>[.<group>][/<subresource>]`, optionally followed by
/// `:<name>` to ask about one object.
fn can_i(user: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let (resource, name) = match resource.split_once(':') {
        Some((r, n)) => (r, Some(n)),
        None => (resource, None),
    };
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, sub)) => (r, Some(sub)),
        None => (resource, None),
    };
    let target = match name {
        Some(name) => format!("{resource}/{name}"),
        None => resource.to_string(),
    };
    let mut args = vec!["auth", "can-i", verb, target.as_str(), "--as", user];
    let sub_flag;
    if let Some(sub) = subresource {
        sub_flag = format!("--subresource={sub}");
        args.push(&sub_flag);
    }
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    // Exit status 1 with "no" on stdout is a refusal, not an error.
    match cp().try_kubectl(&args) {
        Ok(out) => out.trim() == "yes",
        Err(err) if err.contains("failed (exit status: 1)") => false,
        Err(err) => panic!("{err}"),
    }
}

/// `resource.group/subresource` from an RBAC (group, resource) pair.
fn qualified(group: &str, resource: &str) -> String {
    let (resource, sub) = match resource.split_once('/') {
        Some((r, sub)) => (r, Some(sub)),
        None => (resource, None),
    };
    let mut out = resource.to_string();
    if !group.is_empty() {
        out = format!("{out}.{group}");
    }
    if let Some(sub) = sub {
        out = format!("{out}/{sub}");
    }
    out
}

#[test]
fn the_cluster_role_grants_exactly_what_the_operator_needs() {
    let docs = documents(&render("pgfleet", "pgfleet-system", None));
    let role = one(&docs, "ClusterRole");
    let mut granted: BTreeSet<(String, String, String)> = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert!(rule.get("resourceNames").is_none(), "{rule}");
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    let (g, r, v) = (
                        group.as_str().expect("group"),
                        resource.as_str().expect("resource"),
                        verb.as_str().expect("verb"),
                    );
                    assert!(
                        ![g, r, v].contains(&"*"),
                        "no wildcards in the ClusterRole: {rule}"
                    );
                    granted.insert((g.to_string(), r.to_string(), v.to_string()));
                }
            }
        }
    }
    let needed: BTreeSet<(String, String, String)> = OPERATOR_NEEDS
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(granted, needed);
}

#[test]
fn rbac_applied_for_real_allows_the_operator_and_nothing_more() {
    let release_ns = fresh_namespace("pgf-chart-rbac");
    let other_ns = fresh_namespace("pgf-chart-other");
    // Each test binary has its own control plane, but a unique release name keeps the
    // cluster-scoped names apart within it.
    let release = unique("rbac");
    let yaml = render(&release, &release_ns, None);
    let applied = cp()
        .try_apply_yaml(&yaml)
        .expect("apply the rendered chart");
    assert!(
        applied.iter().any(|o| o.starts_with("clusterrole.rbac")),
        "{applied:?}"
    );
    let sa = format!("{release}-pgfleet");
    let user = format!("system:serviceaccount:{release_ns}:{sa}");

    for (group, resource, verbs) in OPERATOR_NEEDS {
        let resource = qualified(group, resource);
        for verb in *verbs {
            for ns in [Some(other_ns.as_str()), None] {
                assert!(
                    can_i(&user, verb, &resource, ns),
                    "the operator must be allowed to {verb} {resource} in {ns:?}"
                );
            }
        }
    }
    // Leader election: its own Lease in the release namespace only.
    for verb in ["get", "update", "patch"] {
        assert!(can_i(
            &user,
            verb,
            "leases.coordination.k8s.io:pgfleet-operator",
            Some(&release_ns)
        ));
        assert!(!can_i(
            &user,
            verb,
            "leases.coordination.k8s.io:other",
            Some(&release_ns)
        ));
        assert!(!can_i(
            &user,
            verb,
            "leases.coordination.k8s.io:pgfleet-operator",
            Some(&other_ns)
        ));
    }
    assert!(can_i(
        &user,
        "create",
        "leases.coordination.k8s.io",
        Some(&release_ns)
    ));
    assert!(!can_i(
        &user,
        "create",
        "leases.coordination.k8s.io",
        Some(&other_ns)
    ));
    assert!(!can_i(
        &user,
        "delete",
        "leases.coordination.k8s.io:pgfleet-operator",
        Some(&release_ns)
    ));

    let refused: &[(&str, &str)] = &[
        ("delete", "nodes"),
        ("get", "nodes"),
        ("create", "pods/exec"),
        ("get", "pods"),
        ("delete", "pods"),
        ("get", "configmaps"),
        ("create", "namespaces"),
        ("delete", "namespaces"),
        ("delete", "tenants.pgfleet.io"),
        ("delete", "poolerfleets.pgfleet.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("bind", "clusterroles.rbac.authorization.k8s.io"),
        ("escalate", "roles.rbac.authorization.k8s.io"),
        ("impersonate", "serviceaccounts"),
        ("create", "serviceaccounts/token"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("deletecollection", "secrets"),
        ("create", "statefulsets.apps"),
    ];
    for (verb, resource) in refused {
        assert!(
            !can_i(&user, verb, resource, Some(&other_ns)),
            "the operator must not be allowed to {verb} {resource}"
        );
    }

    // The real thing: as the operator's ServiceAccount, create a Role granting the poolers'
    // read access to Secrets (allowed only because the operator holds those verbs itself) and
    // a Lease, and be refused a Lease of another name.
    let kubeconfig = cp().kubeconfig_for_service_account(&release_ns, &sa);
    let as_operator = |args: &[&str], yaml: &str| {
        let file = temp_file("as-operator.yaml", yaml);
        let mut all = args.to_vec();
        all.extend(["-f", file.as_str()]);
        cp().try_kubectl_with(&kubeconfig, &all)
    };
    let apply = ["apply", "--server-side", "--field-manager=pgfleet-operator"];
    as_operator(
        &apply,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: edge-pooler, namespace: {other_ns}}}\n\
             rules: [{{apiGroups: [\"\"], resources: [secrets], verbs: [get, list, watch]}}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: edge-pooler, namespace: {other_ns}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: edge-pooler}}\n\
             subjects: [{{kind: ServiceAccount, name: edge-pooler, namespace: {other_ns}}}]\n"
        ),
    )
    .expect("the operator can create a fleet's Role and RoleBinding");
    let escalation = as_operator(
        &apply,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: too-much, namespace: {other_ns}}}\n\
             rules: [{{apiGroups: [\"\"], resources: [pods], verbs: [get]}}]\n"
        ),
    )
    .expect_err("granting what it does not hold is refused");
    assert!(escalation.contains("forbidden"), "{escalation}");
    let lease = |name: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, namespace: {release_ns}}}\n\
             spec: {{holderIdentity: pod-a, leaseDurationSeconds: 15}}\n"
        )
    };
    as_operator(&["create"], &lease("pgfleet-operator")).expect("create its Lease");
    as_operator(&apply, &lease("pgfleet-operator")).expect("renew its Lease");
    as_operator(&["create"], &lease("someone-else")).expect("create cannot be limited by name");
    let err = as_operator(&apply, &lease("someone-else")).expect_err("only its own Lease");
    assert!(err.contains("forbidden"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_controller_reconciles_as_the_charts_service_account() {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use pgfleet_crds::PoolerFleet;
    use pgfleet_operator::{Context, reconcile_fleet};
    use std::sync::Arc;

    let (kubeconfig, fleet_ns) = tokio::task::block_in_place(|| {
        let release_ns = fresh_namespace("pgf-chart-op");
        let fleet_ns = fresh_namespace("pgf-chart-op-fleet");
        let release = unique("op");
        cp().apply_yaml(&render(&release, &release_ns, None));
        cp().apply_yaml(&format!(
            "apiVersion: pgfleet.io/v1alpha1\nkind: PoolerFleet\nmetadata: {{name: edge, namespace: {fleet_ns}}}\nspec: {{replicas: 2}}\n"
        ));
        let kubeconfig =
            cp().kubeconfig_for_service_account(&release_ns, &format!("{release}-pgfleet"));
        (kubeconfig, fleet_ns)
    });
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("client config");
    let client = kube::Client::try_from(config).expect("client");
    let fleets: kube::Api<PoolerFleet> = kube::Api::namespaced(client.clone(), &fleet_ns);
    let fleet = fleets
        .get("edge")
        .await
        .expect("the operator can read fleets");
    let ctx = Arc::new(Context::new(client, "registry.invalid/pgfleet-pooler:test"));
    reconcile_fleet(Arc::new(fleet), ctx)
        .await
        .expect("a full reconcile with only the chart's RBAC");
    let fleet = fleets.get("edge").await.expect("fleet");
    assert!(fleet.status.is_some(), "status written");
    tokio::task::block_in_place(|| {
        for kind in [
            "serviceaccount/edge-pooler",
            "role/edge-pooler",
            "rolebinding/edge-pooler",
            "deployment/edge",
            "service/edge",
            "poddisruptionbudget/edge",
        ] {
            cp().kubectl(&["get", kind, "-n", &fleet_ns]);
        }
    });
}

#[test]
fn the_notes_say_how_to_connect() {
    let chart = chart_dir();
    // A client-side dry-run renders NOTES.txt without a cluster.
    let out = helm(&[
        "install",
        "pgfleet",
        &chart,
        "-n",
        "pgfleet-system",
        "--dry-run=client",
    ]);
    assert!(
        out.contains("psql \"postgresql://app.acme@main.<namespace>.svc:6543/app\""),
        "{out}"
    );
    assert!(out.contains("kubectl apply -n <namespace> -f examples/poolerfleet.yaml"));
    let out = helm(&[
        "install",
        "pgfleet",
        &chart,
        "-n",
        "pgfleet-system",
        "--dry-run=client",
        "--set",
        "defaultFleet.enabled=true",
        "--set",
        "defaultFleet.namespace=db",
    ]);
    assert!(
        out.contains("psql \"postgresql://<user>.<tenant>@default.db.svc:6543/<db>\""),
        "{out}"
    );
    assert!(
        out.contains("kubectl -n db get poolerfleet default"),
        "{out}"
    );
}

/// The whole operator binary, as the chart deploys it: the chart's ServiceAccount and RBAC
/// only, leader election on the chart's Lease in the release namespace, every namespace
/// watched. The examples' fleet, Secrets and Tenant must come out rendered and Accepted, and
/// the operator must never be refused by the API server.
#[test]
fn the_operator_binary_runs_on_the_charts_rbac_alone() {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    struct Killed(Child, PathBuf);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            if std::thread::panicking() {
                let log = std::fs::read_to_string(&self.1).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- operator log ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }

    let release_ns = fresh_namespace("pgf-chart-bin");
    let tenant_ns = fresh_namespace("pgf-chart-bin-db");
    let release = unique("bin");
    cp().apply_yaml(&render(&release, &release_ns, None));
    let kubeconfig =
        cp().kubeconfig_for_service_account(&release_ns, &format!("{release}-pgfleet"));
    let log = cp().dir().join(format!("{}.log", unique("operator")));
    let child = Command::new(env!("CARGO_BIN_EXE_pgfleet-operator"))
        .args(["--admin-addr", "127.0.0.1:0", "--log-format", "json"])
        .args(["--pooler-image", "registry.invalid/pgfleet-pooler:test"])
        .args(["--lease-namespace", &release_ns, "--identity", &release])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("PGFLEET_WATCH_NAMESPACE")
        .env_remove("POD_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn pgfleet-operator");
    let mut operator = Killed(child, log.clone());

    let examples = repo_root().join("examples");
    for file in ["poolerfleet.yaml", "secrets.yaml", "tenant.yaml"] {
        let path = examples.join(file);
        cp().kubectl(&["apply", "-n", &tenant_ns, "-f", &path.to_string_lossy()]);
    }
    let document = pgfleet_operator::resources::tenant_document_secret_name(&tenant_ns, "acme");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = operator.0.try_wait() {
            panic!("the operator exited: {status}");
        }
        let accepted = cp()
            .try_kubectl(&[
                "get",
                "tenant",
                "acme",
                "-n",
                &tenant_ns,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Accepted\")].status}",
            ])
            .unwrap_or_default();
        let rendered = cp()
            .try_kubectl(&["get", "secret", &document, "-n", &tenant_ns, "-o", "name"])
            .is_ok();
        let deployed = cp()
            .try_kubectl(&["get", "deployment", "main", "-n", &tenant_ns, "-o", "name"])
            .is_ok();
        if accepted.trim() == "True" && rendered && deployed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within 30 s: Tenant Accepted={accepted:?}, document {document} rendered={rendered}, Deployment main={deployed}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let holder = cp().kubectl(&[
        "get",
        "lease",
        "pgfleet-operator",
        "-n",
        &release_ns,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(
        holder.trim(),
        release,
        "the operator holds the chart's Lease"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for refusal in ["forbidden", "Forbidden"] {
        assert!(
            !text.contains(refusal),
            "the API server refused the operator something:\n{text}"
        );
    }
}
