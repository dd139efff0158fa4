//! What ships next to the code for people to run: `examples/`, the kind end-to-end script
//! (`e2e/kind/`) and the Dockerfiles.
//!
//! - every example manifest passes the real kube-apiserver's validation (server-side dry-run
//!   with strict field validation; the CRDs' OpenAPI and CEL rules for Tenants and fleets),
//!   and the fleet, Secrets and Tenants also apply for real;
//! - the examples agree with each other (Secret names and keys, fleet name, upstream Service,
//!   tenant ids in the psql Job);
//! - `e2e/kind/run.sh` parses (`bash -n`) and applies only manifests checked here;
//! - the Dockerfiles build packages and binaries that exist, and expose the ports the CRD
//!   defaults and the chart use.
//!
//! Docker and kind are not available here, so the images and the kind script are not run.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use pgfleet_testkit::kube::ControlPlane;
use serde::Deserialize;
use serde_json::Value;

/// Every manifest under `examples/` and `e2e/kind/`, as paths relative to the repository
/// root, in the order they can be applied. A new manifest must be added here (a test checks
/// the directories hold nothing else).
const MANIFESTS: &[&str] = &[
    "examples/secrets.yaml",
    "examples/postgres.yaml",
    "examples/poolerfleet.yaml",
    "examples/tenant.yaml",
    "examples/tenant-auth-query.yaml",
    "e2e/kind/psql-job.yaml",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn path(relative: &str) -> String {
    repo_root().join(relative).to_string_lossy().into_owned()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_root().join(relative))
        .unwrap_or_else(|e| panic!("reading {relative}: {e}"))
}

/// The documents of a manifest file, parsed.
fn documents(relative: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(&read(relative))
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn one(relative: &str, kind: &str) -> Value {
    let docs: Vec<Value> = documents(relative)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(docs.len(), 1, "{relative}: one {kind}");
    docs.into_iter().next().expect("one")
}

fn cp() -> &'static ControlPlane {
    static CRDS: Once = Once::new();
    let cp = ControlPlane::shared();
    CRDS.call_once(|| cp.apply_yaml(&pgfleet_crds::crds_yaml().expect("CRD YAML")));
    cp
}

fn fresh_namespace() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ns = format!(
        "pgf-examples-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    cp().apply_yaml(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    ));
    ns
}

#[test]
fn every_manifest_is_listed_and_namespace_free() {
    let mut found = BTreeSet::new();
    for dir in ["examples", "e2e/kind"] {
        for entry in std::fs::read_dir(repo_root().join(dir)).expect("directory") {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                found.insert(format!("{dir}/{name}"));
            }
        }
    }
    let listed: BTreeSet<String> = MANIFESTS.iter().map(|m| m.to_string()).collect();
    assert_eq!(found, listed, "MANIFESTS must list every example manifest");
    // `kubectl apply -n <namespace>` decides where they go.
    for manifest in MANIFESTS {
        for doc in documents(manifest) {
            assert!(
                doc["metadata"].get("namespace").is_none(),
                "{manifest}: {} {} names a namespace",
                doc["kind"],
                doc["metadata"]["name"]
            );
        }
    }
}

#[test]
fn every_manifest_passes_server_side_validation() {
    let ns = fresh_namespace();
    let mut args = vec![
        "apply".to_string(),
        "--server-side".into(),
        "--dry-run=server".into(),
        "--validate=strict".into(),
        "--field-manager=pgfleet-examples-test".into(),
        "-n".into(),
        ns.clone(),
    ];
    for manifest in MANIFESTS {
        args.push("-f".into());
        args.push(path(manifest));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cp()
        .try_kubectl(&args)
        .expect("the API server accepts every example");
    for object in [
        "secret/app-password",
        "deployment.apps/postgres",
        "poolerfleet.pgfleet.io/main",
        "tenant.pgfleet.io/acme",
        "tenant.pgfleet.io/globex",
        "job.batch/pgfleet-e2e-psql",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }
}

#[test]
fn the_fleet_secrets_and_tenants_apply_for_real() {
    let ns = fresh_namespace();
    for manifest in [
        "examples/secrets.yaml",
        "examples/poolerfleet.yaml",
        "examples/tenant.yaml",
        "examples/tenant-auth-query.yaml",
    ] {
        cp().kubectl(&["apply", "-n", &ns, "-f", &path(manifest)]);
    }
    let get = |kind: &str, name: &str| -> Value {
        serde_json::from_str(&cp().kubectl(&["get", kind, name, "-n", &ns, "-o", "json"]))
            .expect("json")
    };
    let acme = get("tenant", "acme");
    assert_eq!(acme["spec"]["users"][0]["name"], "app");
    assert_eq!(acme["spec"]["fleetRef"]["name"], "main");
    let globex = get("tenant", "globex");
    assert_eq!(globex["spec"]["mode"], "transaction");
    assert_eq!(globex["spec"]["upstream"]["port"], 5432, "server default");
    assert_eq!(
        globex["spec"]["authQuery"]["userSecretRef"]["name"],
        "pgfleet-auth"
    );
    let fleet = get("poolerfleet", "main");
    assert_eq!(fleet["spec"]["replicas"], 2);
    assert_eq!(fleet["spec"]["ports"]["pooled"], 6543);
}

/// `(secret name, key)` pairs the Secrets in examples/secrets.yaml provide.
fn provided_secret_keys() -> BTreeSet<(String, String)> {
    let mut keys = BTreeSet::new();
    for doc in documents("examples/secrets.yaml") {
        assert_eq!(doc["kind"], "Secret");
        let name = doc["metadata"]["name"].as_str().expect("name").to_string();
        for field in ["stringData", "data"] {
            if let Some(map) = doc[field].as_object() {
                for key in map.keys() {
                    keys.insert((name.clone(), key.clone()));
                }
            }
        }
    }
    keys
}

/// Every `secretKeyRef` (pod env) under `value`.
fn env_secret_refs(value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            if let Some(r) = map.get("secretKeyRef") {
                out.push((
                    r["name"].as_str().expect("name").into(),
                    r["key"].as_str().expect("key").into(),
                ));
            }
            map.values().for_each(|v| env_secret_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| env_secret_refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_examples_agree_with_each_other() {
    let secrets = provided_secret_keys();
    let fleet = one("examples/poolerfleet.yaml", "PoolerFleet");
    let fleet_name = fleet["metadata"]["name"].as_str().expect("fleet name");
    let postgres_service = one("examples/postgres.yaml", "Service");

    let mut tenant_ids = Vec::new();
    for manifest in ["examples/tenant.yaml", "examples/tenant-auth-query.yaml"] {
        let tenant = one(manifest, "Tenant");
        let spec = &tenant["spec"];
        assert_eq!(spec["fleetRef"]["name"], fleet_name, "{manifest}");
        assert_eq!(
            spec["upstream"]["host"], postgres_service["metadata"]["name"],
            "{manifest}: upstream is the example PostgreSQL"
        );
        assert_eq!(spec["upstream"]["database"], "app", "{manifest}");
        for user in spec["users"].as_array().into_iter().flatten() {
            let r = &user["passwordSecretRef"];
            let pair = (
                r["name"].as_str().expect("name").to_string(),
                r["key"].as_str().expect("key").to_string(),
            );
            assert!(
                secrets.contains(&pair),
                "{manifest}: {pair:?} not in secrets.yaml"
            );
        }
        if let Some(name) = spec["authQuery"]["userSecretRef"]["name"].as_str() {
            for key in ["username", "password"] {
                assert!(
                    secrets.contains(&(name.to_string(), key.to_string())),
                    "{manifest}: auth-query Secret {name} lacks {key}"
                );
            }
        }
        let id = spec["externalId"]
            .as_str()
            .or(tenant["metadata"]["name"].as_str())
            .expect("tenant id");
        tenant_ids.push(id.to_string());
    }
    assert_eq!(tenant_ids, ["acme", "globex"]);

    // The example PostgreSQL takes its passwords from the same Secrets and creates the roles
    // the tenants use.
    let postgres = one("examples/postgres.yaml", "Deployment");
    let mut refs = Vec::new();
    env_secret_refs(&postgres, &mut refs);
    assert!(refs.contains(&("app-password".into(), "password".into())));
    assert!(refs.contains(&("pgfleet-auth".into(), "password".into())));
    for pair in &refs {
        assert!(
            secrets.contains(pair),
            "postgres.yaml: {pair:?} not in secrets.yaml"
        );
    }
    let init = one("examples/postgres.yaml", "ConfigMap");
    let script = init["data"]["10-pgfleet-example.sh"]
        .as_str()
        .expect("init script");
    let auth_user = documents("examples/secrets.yaml")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "pgfleet-auth")
        .expect("pgfleet-auth")["stringData"]["username"]
        .as_str()
        .expect("username")
        .to_string();
    for needle in [
        "CREATE ROLE app LOGIN".to_string(),
        format!("CREATE ROLE {auth_user} LOGIN"),
        "CREATE DATABASE app".to_string(),
        "CREATE FUNCTION pgfleet.get_auth".to_string(),
    ] {
        assert!(script.contains(&needle), "init script lacks {needle:?}");
    }
    let aq = one("examples/tenant-auth-query.yaml", "Tenant");
    assert!(
        aq["spec"]["authQuery"]["query"]
            .as_str()
            .expect("query")
            .contains("pgfleet.get_auth($1)")
    );

    // The psql Job connects to the fleet's Service as app.<tenant> for both tenants, with
    // the password from the Secret.
    let job = one("e2e/kind/psql-job.yaml", "Job");
    let job_text = serde_json::to_string(&job).expect("json");
    assert!(job_text.contains(&format!("@{fleet_name}.${{POD_NAMESPACE}}.svc:6543/app")));
    assert!(job_text.contains(&format!("for tenant in {}", tenant_ids.join(" "))));
    let mut refs = Vec::new();
    env_secret_refs(&job, &mut refs);
    assert_eq!(refs, [("app-password".to_string(), "password".to_string())]);
}

#[test]
fn the_kind_script_parses_and_applies_only_checked_manifests() {
    let script = path("e2e/kind/run.sh");
    let out = Command::new("bash")
        .args(["-n", &script])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "bash -n e2e/kind/run.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = read("e2e/kind/run.sh");
    assert!(text.starts_with("#!/usr/bin/env bash\n"));
    assert!(text.contains("\nset -euo pipefail\n"));
    // Every manifest path it mentions is one the tests above check, and it applies them all.
    let mentioned: BTreeSet<String> = text
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .filter_map(|word| {
            let start = word.find("examples/").or_else(|| word.find("e2e/kind/"))?;
            let path = &word[start..];
            path.ends_with(".yaml").then(|| path.to_string())
        })
        .collect();
    let listed: BTreeSet<String> = MANIFESTS.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        mentioned, listed,
        "run.sh applies exactly the checked manifests"
    );
    for needle in [
        "charts/pgfleet",
        "operator.image.pullPolicy=Never",
        "kind load docker-image",
        "--for=condition=Ready tenant/acme tenant/globex",
        "rollout status -n \"$NS\" deployment/main",
        "Dockerfile.operator",
        "Dockerfile.pooler",
        "KEEP_CLUSTER",
        "trap cleanup EXIT",
    ] {
        assert!(text.contains(needle), "run.sh lacks {needle:?}");
    }
    for tool in ["docker", "kind", "kubectl", "\"$HELM\""] {
        assert!(
            text.contains(&format!("need {tool} ")),
            "run.sh must check for {tool}"
        );
    }
}

/// `cargo metadata --no-deps`: package name → its binary targets.
fn workspace_binaries() -> Vec<(String, Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version=1", "--offline"])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.contains(&"bin".into()))
                })
                .map(|t| t["name"].as_str().expect("target name").to_string())
                .collect();
            (p["name"].as_str().expect("name").to_string(), bins)
        })
        .collect()
}

/// The word after `flag` in `text`.
fn word_after<'a>(text: &'a str, flag: &str) -> &'a str {
    let rest = &text[text.find(flag).unwrap_or_else(|| panic!("{flag} missing")) + flag.len()..];
    rest.split_whitespace().next().expect("a word")
}

fn exposed_ports(dockerfile: &str) -> Vec<u16> {
    dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("port"))
        .collect()
}

#[test]
fn the_dockerfiles_build_real_binaries_and_expose_the_right_ports() {
    let packages = workspace_binaries();
    for (file, package) in [
        ("Dockerfile.operator", "pgfleet-operator"),
        ("Dockerfile.pooler", "pgfleet-pooler"),
    ] {
        let text = read(file);
        assert!(text.contains("FROM rust:1.95-bookworm AS build"), "{file}");
        assert!(
            text.contains("FROM gcr.io/distroless/cc-debian12:nonroot"),
            "{file}"
        );
        assert!(text.contains("\nUSER 65532:65532\n"), "{file}");
        assert!(
            text.contains("--mount=type=cache,target=/src/target"),
            "{file}"
        );
        assert!(
            text.contains("cargo build --release --locked -p "),
            "{file}"
        );
        let pkg = word_after(&text, "cargo build --release --locked -p ");
        let bin = word_after(&text, " --bin ");
        assert_eq!(pkg, package, "{file}");
        let (_, bins) = packages
            .iter()
            .find(|(name, _)| name == pkg)
            .unwrap_or_else(|| panic!("{file}: no workspace package {pkg}"));
        assert!(
            bins.iter().any(|b| b == bin),
            "{file}: package {pkg} has no binary {bin} (it has {bins:?})"
        );
        assert!(
            text.contains(&format!("target/release/{bin} /out/{bin}")),
            "{file}: copies the built binary"
        );
        assert!(
            text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")),
            "{file}: runs {bin}"
        );
    }

    // The pooler image exposes the ports a PoolerFleet uses by default.
    let defaults = pgfleet_crds::FleetPorts::default();
    let mut want = vec![defaults.session, defaults.pooled, defaults.admin];
    want.sort();
    let mut got: Vec<i32> = exposed_ports(&read("Dockerfile.pooler"))
        .into_iter()
        .map(i32::from)
        .collect();
    got.sort();
    assert_eq!(got, want, "Dockerfile.pooler EXPOSE");
    assert_eq!(want, [5432, 6543, 8080]);

    // The operator image exposes the admin port the chart configures by default.
    let values: Value =
        serde_yaml_ng::from_str(&read("charts/pgfleet/values.yaml")).expect("values.yaml");
    let port = values["operator"]["metrics"]["port"]
        .as_u64()
        .expect("port");
    assert_eq!(exposed_ports(&read("Dockerfile.operator")), [port as u16]);

    // The build context leaves out build output.
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        ".dockerignore"
    );
}
