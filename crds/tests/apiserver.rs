//! The CRDs against a real kube-apiserver (testkit's control plane): accepted as generated,
//! defaults applied by the server, and bad specs refused at apply time with messages a person
//! understands.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use pgfleet_testkit::kube::ControlPlane;

fn control_plane() -> &'static ControlPlane {
    let cp = ControlPlane::shared();
    cp.apply_yaml(&pgfleet_crds::crds_yaml().expect("CRD YAML"));
    cp
}

fn tenant(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: pgfleet.io/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}"
    )
}

const GOOD: &str = "  upstream: {host: db.internal}\n  users: [{name: app, passwordSecretRef: {name: app-pw, key: password}}]\n";

#[test]
fn a_valid_tenant_is_accepted_with_server_side_defaults() {
    let cp = control_plane();
    cp.apply_yaml(&tenant("valid", GOOD));
    let stored = cp.kubectl(&["get", "tenant", "valid", "-n", "default", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stored).expect("json");
    assert_eq!(v["spec"]["mode"], "transaction");
    assert_eq!(v["spec"]["defaultPoolSize"], 15);
    assert_eq!(v["spec"]["upstream"]["port"], 5432);
    assert_eq!(v["spec"]["upstream"]["database"], "postgres");
    // The short name and print columns work.
    let listed = cp.kubectl(&["get", "pgt", "-n", "default"]);
    for column in ["MODE", "POOL", "JIT", "READY", "ENDPOINT"] {
        assert!(listed.contains(column), "{column} missing:\n{listed}");
    }
}

#[test]
fn bad_tenants_are_refused_with_a_clear_message() {
    let cp = control_plane();
    let cases: [(&str, String, &str); 7] = [
        (
            "bad-cidr",
            format!("{GOOD}  allowList: [\"10.0.0.0/33\"]\n"),
            "must be a CIDR",
        ),
        (
            "bad-mode",
            format!("{GOOD}  mode: statement\n"),
            "supported values: \"transaction\", \"session\"",
        ),
        (
            "jit-no-url",
            format!("{GOOD}  useJit: true\n"),
            "jitApiUrl is required when useJit is true",
        ),
        (
            "jit-ftp",
            format!("{GOOD}  useJit: true\n  jitApiUrl: ftp://jit.example\n"),
            "http:// or https://",
        ),
        (
            "negative-pool",
            format!("{GOOD}  defaultPoolSize: -3\n"),
            "greater than or equal to 1",
        ),
        (
            "bad-id",
            format!("{GOOD}  externalId: \"a.b\"\n"),
            "externalId",
        ),
        (
            "no-login",
            "  upstream: {host: db.internal}\n".to_string(),
            "users or authQuery must be set",
        ),
    ];
    for (name, spec, expected) in cases {
        let err = cp
            .try_apply_yaml(&tenant(name, &spec))
            .expect_err(&format!("{name} must be refused"));
        assert!(
            err.contains(expected),
            "{name}: expected {expected:?} in:\n{err}"
        );
        assert!(
            cp.try_kubectl(&["get", "tenant", name, "-n", "default"])
                .is_err(),
            "{name} must not be stored"
        );
    }
}

#[test]
fn a_fleet_scales_through_its_scale_subresource() {
    let cp = control_plane();
    cp.apply_yaml(
        "apiVersion: pgfleet.io/v1alpha1\nkind: PoolerFleet\nmetadata: {name: main, namespace: default}\nspec: {replicas: 2}\n",
    );
    cp.kubectl(&[
        "scale",
        "poolerfleet",
        "main",
        "-n",
        "default",
        "--replicas=3",
    ]);
    let replicas = cp.kubectl(&[
        "get",
        "pgf",
        "main",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas.trim(), "3");
    let err = cp
        .try_apply_yaml(
            "apiVersion: pgfleet.io/v1alpha1\nkind: PoolerFleet\nmetadata: {name: clash, namespace: default}\nspec: {ports: {session: 6543, pooled: 6543}}\n",
        )
        .expect_err("ports must differ");
    assert!(err.to_lowercase().contains("port"), "{err}");
}
