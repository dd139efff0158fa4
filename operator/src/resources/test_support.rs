//! Fixtures for the builders' unit tests: resources as the API server would hand them over.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pgfleet_crds::{PoolerFleet, PoolerFleetSpec, Tenant, TenantSpec};

/// A fleet with the spec's defaults, as read back from the API server (uid `uid-<name>`).
pub fn fleet(name: &str, namespace: &str) -> PoolerFleet {
    fleet_with(name, namespace, "{}")
}

/// A fleet whose spec is the given YAML (defaults fill the rest).
pub fn fleet_with(name: &str, namespace: &str, spec_yaml: &str) -> PoolerFleet {
    let spec: PoolerFleetSpec = serde_yaml_ng::from_str(spec_yaml).expect("fleet spec parses");
    PoolerFleet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// A tenant whose spec is the given YAML, at generation 3.
pub fn tenant(name: &str, namespace: &str, spec_yaml: &str) -> Tenant {
    let spec: TenantSpec = serde_yaml_ng::from_str(spec_yaml).expect("tenant spec parses");
    Tenant {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(3),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}
