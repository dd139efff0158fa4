//! Events a person sees in `kubectl describe poolerfleet`: one per change of the fleet's
//! conditions, never one per reconcile.
//!
//! - `Reconciled` (Normal) the first time the fleet's children are applied, and when a spec that
//!   was invalid is fixed;
//! - `InvalidSpec` (Warning) when the spec cannot be turned into children (the reason says which
//!   field);
//! - `AllReplicasReady` (Normal) when every desired replica becomes ready, `PodsNotReady`
//!   (Warning) when a fleet that was ready stops being so;
//! - `Unavailable` (Warning) when no replica is available any more, `Available` (Normal) when
//!   one is again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use pgfleet_crds::PoolerFleetStatus;
use pgfleet_crds::fleet::{CONDITION_AVAILABLE, CONDITION_READY};

use crate::events::Notice;
use crate::fleet_controller::{
    REASON_ALL_REPLICAS_READY, REASON_INVALID_SPEC, REASON_PODS_NOT_READY,
};

/// Event reason: the children were applied (first time, or after an invalid spec was fixed).
pub const EVENT_RECONCILED: &str = "Reconciled";
/// Event reason: at least one replica is available again.
pub const EVENT_AVAILABLE: &str = "Available";
/// Event reason: no replica is available.
pub const EVENT_UNAVAILABLE: &str = "Unavailable";

fn condition<'a>(status: Option<&'a PoolerFleetStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

fn notice(warning: bool, reason: &str, note: String, condition: &'static str) -> Notice {
    Notice {
        warning,
        reason: reason.to_string(),
        note,
        action: "Reconcile",
        condition: Some(condition),
    }
}

/// The events a change of status from `previous` to `desired` deserves.
pub fn fleet_notices(
    previous: Option<&PoolerFleetStatus>,
    desired: &PoolerFleetStatus,
) -> Vec<Notice> {
    let mut notices = Vec::new();
    let ready_before = condition(previous, CONDITION_READY);
    if let Some(ready) = condition(Some(desired), CONDITION_READY) {
        let changed =
            ready_before.is_none_or(|b| (&b.status, &b.reason) != (&ready.status, &ready.reason));
        let was_invalid = ready_before.is_some_and(|b| b.reason == REASON_INVALID_SPEC);
        let was_ready = ready_before.is_some_and(|b| b.status == "True");
        if changed {
            if ready.reason == REASON_INVALID_SPEC {
                notices.push(notice(
                    true,
                    REASON_INVALID_SPEC,
                    ready.message.clone(),
                    CONDITION_READY,
                ));
            } else if ready_before.is_none() || was_invalid {
                notices.push(notice(
                    false,
                    EVENT_RECONCILED,
                    "applied the fleet's ServiceAccount, Role, RoleBinding, Deployment, Service and PodDisruptionBudget".into(),
                    CONDITION_READY,
                ));
            }
            if ready.status == "True" && ready.reason == REASON_ALL_REPLICAS_READY {
                notices.push(notice(
                    false,
                    REASON_ALL_REPLICAS_READY,
                    ready.message.clone(),
                    CONDITION_READY,
                ));
            } else if was_ready && ready.reason == REASON_PODS_NOT_READY {
                notices.push(notice(
                    true,
                    REASON_PODS_NOT_READY,
                    ready.message.clone(),
                    CONDITION_READY,
                ));
            }
        }
    }
    let available_before = condition(previous, CONDITION_AVAILABLE);
    if let Some(available) = condition(Some(desired), CONDITION_AVAILABLE)
        && let Some(before) = available_before
        && before.status != available.status
    {
        if available.status == "True" {
            notices.push(notice(
                false,
                EVENT_AVAILABLE,
                available.message.clone(),
                CONDITION_AVAILABLE,
            ));
        } else {
            notices.push(notice(
                true,
                EVENT_UNAVAILABLE,
                available.message.clone(),
                CONDITION_AVAILABLE,
            ));
        }
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{type_} {status} {reason}"),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn status(ready: (&str, &str), available: (&str, &str)) -> PoolerFleetStatus {
        PoolerFleetStatus {
            conditions: vec![
                cond(CONDITION_READY, ready.0, ready.1),
                cond(CONDITION_AVAILABLE, available.0, available.1),
            ],
            ..PoolerFleetStatus::default()
        }
    }

    fn reasons(notices: &[Notice]) -> Vec<(&str, bool)> {
        notices
            .iter()
            .map(|n| (n.reason.as_str(), n.warning))
            .collect()
    }

    #[test]
    fn events_follow_condition_changes_only() {
        let starting = status(
            ("False", REASON_PODS_NOT_READY),
            ("False", "NoReplicasAvailable"),
        );
        assert_eq!(
            reasons(&fleet_notices(None, &starting)),
            [(EVENT_RECONCILED, false)]
        );
        // Nothing changed: nothing to say.
        assert!(fleet_notices(Some(&starting), &starting).is_empty());
        let ready = status(
            ("True", REASON_ALL_REPLICAS_READY),
            ("True", "MinimumReplicasAvailable"),
        );
        assert_eq!(
            reasons(&fleet_notices(Some(&starting), &ready)),
            [(REASON_ALL_REPLICAS_READY, false), (EVENT_AVAILABLE, false)]
        );
        let degraded = status(
            ("False", REASON_PODS_NOT_READY),
            ("False", "NoReplicasAvailable"),
        );
        assert_eq!(
            reasons(&fleet_notices(Some(&ready), &degraded)),
            [(REASON_PODS_NOT_READY, true), (EVENT_UNAVAILABLE, true)]
        );
    }

    #[test]
    fn an_invalid_spec_is_a_warning_and_its_fix_is_news() {
        let invalid = status(
            ("False", REASON_INVALID_SPEC),
            ("False", "NoReplicasAvailable"),
        );
        assert_eq!(
            reasons(&fleet_notices(None, &invalid)),
            [(REASON_INVALID_SPEC, true)]
        );
        let fixed = status(
            ("False", REASON_PODS_NOT_READY),
            ("False", "NoReplicasAvailable"),
        );
        assert_eq!(
            reasons(&fleet_notices(Some(&invalid), &fixed)),
            [(EVENT_RECONCILED, false)]
        );
    }
}
