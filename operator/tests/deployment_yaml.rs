//! Golden check: the Deployment a typical fleet gets, as YAML.
//!
//! The golden file is what a reviewer reads to see the pods the operator makes. When a change
//! to the builder is intended, regenerate it with
//! `PGFLEET_BLESS=1 cargo test -p pgfleet-operator --test deployment_yaml` and review the diff.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pgfleet_crds::{PoolerFleet, PoolerFleetSpec};
use pgfleet_operator::resources::deployment;

fn typical_fleet() -> PoolerFleet {
    let spec: PoolerFleetSpec = serde_yaml_ng::from_str(
        r#"
replicas: 3
resources:
  requests: {cpu: 500m, memory: 256Mi}
  limits: {memory: 512Mi}
tls: {secretName: edge-tls}
tolerations: [{key: dedicated, operator: Equal, value: poolers, effect: NoSchedule}]
"#,
    )
    .expect("fleet spec parses");
    PoolerFleet {
        metadata: ObjectMeta {
            name: Some("edge".into()),
            namespace: Some("pgfleet".into()),
            uid: Some("5f0c7c1e-8a0b-4f55-9a55-2f1b8a7d3c11".into()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

#[test]
fn deployment_yaml_matches_the_golden_file() {
    let built = deployment(&typical_fleet(), "ghcr.io/pgfleet/pooler:0.1.0").expect("builds");
    let yaml = serde_yaml_ng::to_string(&built).expect("serializes");

    // It round-trips: what the operator sends is what Kubernetes' types read.
    let back: Deployment = serde_yaml_ng::from_str(&yaml).expect("parses back");
    assert_eq!(back, built);

    // The fields a reviewer looks for first are where they belong.
    for needle in [
        "kind: Deployment",
        "apiVersion: apps/v1",
        "pgfleet.io/config-hash:",
        "- --tenant-source",
        "- kubernetes",
        "readOnlyRootFilesystem: true",
        "mountPath: /etc/pgfleet/tls",
        "path: /readyz",
        "serviceAccountName: edge-pooler",
    ] {
        assert!(yaml.contains(needle), "{needle:?} missing from:\n{yaml}");
    }

    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/deployment.yaml");
    if std::env::var_os("PGFLEET_BLESS").is_some() {
        std::fs::write(&golden, &yaml).expect("writes the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run with PGFLEET_BLESS=1 to create it",
            golden.display()
        )
    });
    assert_eq!(
        yaml, expected,
        "the Deployment changed; if intended, rerun with PGFLEET_BLESS=1 and review the diff"
    );
}
