//! The fleet's PodDisruptionBudget, `<fleet>`: keeps poolers up through node drains.
//!
//! CloudNativePG and Zalando create none for their poolers, and users ask for one; Crunchy PGO's
//! rule is the one followed here: `minAvailable` 1 by default once there is more than one
//! replica.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pgfleet_crds::PoolerFleet;

use super::error::BuildError;
use super::meta::{FleetIdentity, selector_labels};

/// The fleet's PodDisruptionBudget, or `None` when the fleet should have none (the controller
/// then deletes any it made before).
///
/// - `replicas <= 1`: none, whatever `minAvailable` says. A budget that keeps the only pod
///   would block every node drain forever.
/// - `minAvailable` 0 or `"0%"`: none; the user turned it off.
/// - `minAvailable` set: that value (a count or a percentage).
/// - otherwise: `minAvailable: 1`.
///
/// `unhealthyPodEvictionPolicy: AlwaysAllow` lets a drain evict pods that are not ready (a
/// crash-looping pooler protects no one), so a broken rollout cannot wedge node maintenance.
pub fn pod_disruption_budget(
    fleet: &PoolerFleet,
) -> Result<Option<PodDisruptionBudget>, BuildError> {
    let id = FleetIdentity::of(fleet)?;
    let spec = &fleet.spec;
    if spec.replicas <= 1 {
        return Ok(None);
    }
    let min_available = match spec
        .pod_disruption_budget
        .as_ref()
        .and_then(|p| p.min_available.clone())
    {
        Some(value) if is_zero(&value) => return Ok(None),
        Some(value) => value,
        None => IntOrString::Int(1),
    };
    Ok(Some(PodDisruptionBudget {
        metadata: id.child_meta(id.workload_name()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(min_available),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&id.name)),
                ..LabelSelector::default()
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }))
}

/// `0`, `"0"`, `"0%"` (and `"00%"`): a budget that allows every disruption.
fn is_zero(value: &IntOrString) -> bool {
    match value {
        IntOrString::Int(n) => *n == 0,
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%').unwrap_or(s);
            !digits.is_empty() && digits.bytes().all(|b| b == b'0')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::meta::fleet_labels;
    use crate::resources::test_support::{fleet, fleet_with};

    fn min_available(yaml: &str) -> Option<IntOrString> {
        pod_disruption_budget(&fleet_with("edge", "db", yaml))
            .expect("builds")
            .map(|pdb| {
                pdb.spec
                    .and_then(|s| s.min_available)
                    .expect("minAvailable")
            })
    }

    #[test]
    fn default_is_one_when_replicated() {
        let pdb = pod_disruption_budget(&fleet("edge", "db"))
            .expect("builds")
            .expect("2 replicas by default");
        assert_eq!(pdb.metadata.name.as_deref(), Some("edge"));
        assert_eq!(pdb.metadata.namespace.as_deref(), Some("db"));
        assert_eq!(pdb.metadata.labels, Some(fleet_labels("edge")));
        assert_eq!(
            pdb.metadata.owner_references.expect("owned")[0].uid,
            "uid-edge"
        );
        let spec = pdb.spec.expect("spec");
        assert_eq!(spec.min_available, Some(IntOrString::Int(1)));
        assert_eq!(spec.max_unavailable, None);
        assert_eq!(
            spec.selector.and_then(|s| s.match_labels),
            Some(selector_labels("edge"))
        );
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
    }

    #[test]
    fn none_for_a_single_replica_or_none_at_all() {
        assert_eq!(min_available("replicas: 1"), None);
        assert_eq!(min_available("replicas: 0"), None);
        assert_eq!(
            min_available("replicas: 1\npodDisruptionBudget: {minAvailable: 1}"),
            None
        );
    }

    #[test]
    fn explicit_values_and_zero() {
        assert_eq!(
            min_available("replicas: 5\npodDisruptionBudget: {minAvailable: 3}"),
            Some(IntOrString::Int(3))
        );
        assert_eq!(
            min_available("replicas: 5\npodDisruptionBudget: {minAvailable: '60%'}"),
            Some(IntOrString::String("60%".into()))
        );
        assert_eq!(
            min_available("replicas: 5\npodDisruptionBudget: {minAvailable: 0}"),
            None
        );
        assert_eq!(
            min_available("replicas: 5\npodDisruptionBudget: {minAvailable: '0%'}"),
            None
        );
        assert_eq!(
            min_available("replicas: 3\npodDisruptionBudget: {}"),
            Some(IntOrString::Int(1))
        );
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&IntOrString::Int(0)));
        assert!(is_zero(&IntOrString::String("0%".into())));
        assert!(is_zero(&IntOrString::String("0".into())));
        assert!(!is_zero(&IntOrString::String("%".into())));
        assert!(!is_zero(&IntOrString::String("10%".into())));
        assert!(!is_zero(&IntOrString::Int(2)));
    }
}
