//! Events a person sees in `kubectl describe tenant`: one per state change, never one per
//! reconcile.
//!
//! - `Accepted` (Normal) when the Tenant becomes accepted, and a Warning with the rejection's
//!   reason (`SecretNotFound`, `ExternalIdConflict`, ...) when it is rejected or rejected for a
//!   new reason;
//! - `Rendered` (Normal) when the document's content changed (created, re-rendered, or put back
//!   after someone edited or deleted it);
//! - `DocumentDeleted` (Normal) when the controller removed a document;
//! - `FleetNotAvailable` (Warning) when the fleet serving the Tenant stops being available.
//!
//! State changes are computed from the Tenant's status as last read; since that copy can lag
//! behind the controller's own status write, [`EventLog`] also remembers the last condition
//! event published per Tenant so a quick second reconcile does not repeat it.

use pgfleet_crds::TenantStatus;
use pgfleet_crds::tenant::{CONDITION_ACCEPTED, CONDITION_READY};

pub use crate::events::{EventLog, Notice, REPORTING_CONTROLLER, publish};

use super::status::{REASON_ACCEPTED, REASON_FLEET_NOT_AVAILABLE, condition};

/// Event reason: the document's content was written.
pub const EVENT_RENDERED: &str = "Rendered";
/// Event reason: the document was deleted.
pub const EVENT_DOCUMENT_DELETED: &str = "DocumentDeleted";

/// The events a change of status from `previous` to `desired` deserves.
pub fn status_notices(previous: Option<&TenantStatus>, desired: &TenantStatus) -> Vec<Notice> {
    let mut notices = Vec::new();
    let key = |c: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>| {
        c.map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let before = condition(previous, CONDITION_ACCEPTED);
    let after = condition(Some(desired), CONDITION_ACCEPTED);
    if let Some(after) = after
        && key(before) != key(Some(after))
    {
        let accepted = after.status == "True";
        let was_accepted = before.is_some_and(|b| b.status == "True");
        // Becoming accepted, or a (new) rejection; an accepted Tenant whose message merely
        // changed (another fleet name) is not news.
        if !accepted || !was_accepted {
            notices.push(Notice {
                warning: !accepted,
                reason: if accepted {
                    REASON_ACCEPTED.to_string()
                } else {
                    after.reason.clone()
                },
                note: after.message.clone(),
                action: "Reconcile",
                condition: Some(CONDITION_ACCEPTED),
            });
        }
    }
    let ready_before = condition(previous, CONDITION_READY);
    let ready_after = condition(Some(desired), CONDITION_READY);
    if let Some(after) = ready_after
        && after.reason == REASON_FLEET_NOT_AVAILABLE
        && ready_before.is_none_or(|b| b.reason != REASON_FLEET_NOT_AVAILABLE)
    {
        notices.push(Notice {
            warning: true,
            reason: REASON_FLEET_NOT_AVAILABLE.to_string(),
            note: after.message.clone(),
            action: "Reconcile",
            condition: Some(CONDITION_READY),
        });
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::FleetKey;
    use crate::tenant_controller::status::{Outcome, Rejection, desired_status};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1).expect("timestamp"))
    }

    fn key() -> FleetKey {
        FleetKey {
            namespace: "db".into(),
            name: "edge".into(),
        }
    }

    fn status(previous: Option<&TenantStatus>, outcome: Outcome) -> TenantStatus {
        desired_status(previous, Some(1), &key(), &outcome, now())
    }

    fn rendered(unavailable: Option<&str>) -> Outcome {
        Outcome::Rendered {
            endpoint: "e".into(),
            replicas: 1,
            unavailable: unavailable.map(str::to_string),
        }
    }

    fn missing(secret: &str) -> Outcome {
        Outcome::Rejected(Rejection::SecretNotFound {
            secret: secret.into(),
            field: "f".into(),
        })
    }

    fn reasons(notices: &[Notice]) -> Vec<(&str, bool)> {
        notices
            .iter()
            .map(|n| (n.reason.as_str(), n.warning))
            .collect()
    }

    #[test]
    fn events_follow_state_changes_only() {
        let rejected = status(None, missing("a/x"));
        assert_eq!(
            reasons(&status_notices(None, &rejected)),
            [("SecretNotFound", true)]
        );
        let same = status(Some(&rejected), missing("a/x"));
        assert!(
            status_notices(Some(&rejected), &same).is_empty(),
            "no repeat"
        );
        let other = status(Some(&rejected), missing("a/y"));
        assert_eq!(
            reasons(&status_notices(Some(&rejected), &other)),
            [("SecretNotFound", true)],
            "another Secret is news"
        );

        let accepted = status(Some(&other), rendered(None));
        assert_eq!(
            reasons(&status_notices(Some(&other), &accepted)),
            [("Accepted", false)]
        );
        let again = status(Some(&accepted), rendered(None));
        assert!(status_notices(Some(&accepted), &again).is_empty());

        let unavailable = status(Some(&accepted), rendered(Some("no pods")));
        assert_eq!(
            reasons(&status_notices(Some(&accepted), &unavailable)),
            [("FleetNotAvailable", true)]
        );
        let still = status(Some(&unavailable), rendered(Some("no pods")));
        assert!(status_notices(Some(&unavailable), &still).is_empty());

        // First sight of a Tenant rendered on an unavailable fleet: both.
        let first = status(None, rendered(Some("no pods")));
        assert_eq!(
            reasons(&status_notices(None, &first)),
            [("Accepted", false), ("FleetNotAvailable", true)]
        );
    }

    #[test]
    fn the_log_suppresses_a_repeated_condition_event() {
        let log = EventLog::default();
        let notice = Notice {
            warning: false,
            reason: "Accepted".into(),
            note: "ok".into(),
            action: "Reconcile",
            condition: Some(CONDITION_ACCEPTED),
        };
        assert!(log.is_new("u1", &notice));
        assert!(!log.is_new("u1", &notice));
        assert!(log.is_new("u2", &notice), "per Tenant");
        let rejected = Notice {
            warning: true,
            reason: "SecretNotFound".into(),
            ..notice.clone()
        };
        assert!(log.is_new("u1", &rejected));
        assert!(log.is_new("u1", &notice), "back to accepted is news again");

        let unavailable = Notice {
            warning: true,
            reason: REASON_FLEET_NOT_AVAILABLE.into(),
            condition: Some(CONDITION_READY),
            ..notice.clone()
        };
        assert!(log.is_new("u1", &unavailable));
        assert!(!log.is_new("u1", &unavailable));
        assert!(!log.is_new("u1", &notice), "conditions are tracked apart");
        log.reset("u1", CONDITION_READY);
        assert!(
            log.is_new("u1", &unavailable),
            "unavailable again after being ready"
        );

        let rendered = Notice {
            reason: EVENT_RENDERED.into(),
            action: "Render",
            condition: None,
            ..notice.clone()
        };
        assert!(
            log.is_new("u1", &rendered) && log.is_new("u1", &rendered),
            "not deduplicated"
        );
        log.forget("u1");
        assert!(log.is_new("u1", &notice));
    }
}
