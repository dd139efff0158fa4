//! What a Tenant's status should say: pure functions of what the reconcile found.
//!
//! `Accepted` says whether the spec, its Secrets and its fleet resolved (and if not, which one
//! did not: the reason is one of the `REASON_*` constants, the message names the object, key or
//! tenant involved). `Ready` says whether the document is rendered and the fleet can serve it.
//! Conditions keep their `lastTransitionTime` unless their status flips, so an unchanged
//! outcome produces an identical status and nothing is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use pgfleet_crds::tenant::{CONDITION_ACCEPTED, CONDITION_READY};
use pgfleet_crds::{PoolerFleet, TenantStatus};

use crate::resources::FleetKey;

/// Accepted reason: the spec, its Secrets and its fleet resolved.
pub const REASON_ACCEPTED: &str = "Accepted";
/// Accepted reason: a referenced Secret does not exist.
pub const REASON_SECRET_NOT_FOUND: &str = "SecretNotFound";
/// Accepted reason: a referenced Secret lacks the key.
pub const REASON_SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
/// Accepted reason: a referenced Secret key holds something unusable (empty, not UTF-8, ...).
pub const REASON_INVALID_SECRET: &str = "InvalidSecret";
/// Accepted reason: the referenced PoolerFleet does not exist.
pub const REASON_FLEET_NOT_FOUND: &str = "FleetNotFound";
/// Accepted reason: the fleet does not admit Tenants of this namespace.
pub const REASON_NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
/// Accepted reason: an older Tenant of the same fleet has the same externalId.
pub const REASON_EXTERNAL_ID_CONFLICT: &str = "ExternalIdConflict";
/// Accepted reason: the spec cannot be rendered (what the schema could not refuse).
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Ready reason: the document is rendered and the fleet is available.
pub const REASON_RENDERED: &str = "Rendered";
/// Ready reason: the document is rendered but the fleet has no available replica.
pub const REASON_FLEET_NOT_AVAILABLE: &str = "FleetNotAvailable";
/// Ready reason: the Tenant is not accepted, so nothing is rendered.
pub const REASON_NOT_ACCEPTED: &str = "NotAccepted";

/// Why a Tenant is not accepted. Each variant is a decision about the Tenant (reported in its
/// status, its document removed), not a failure to retry: API errors are [`super::Error`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A referenced Secret does not exist.
    SecretNotFound {
        /// `namespace/name` of the Secret.
        secret: String,
        /// Which field references it (`spec.users[0].passwordSecretRef`).
        field: String,
    },
    /// A referenced Secret exists but lacks the key.
    SecretKeyNotFound {
        /// `namespace/name` of the Secret.
        secret: String,
        /// The missing key.
        key: String,
        /// Which field references it.
        field: String,
    },
    /// A referenced key's value cannot be used.
    InvalidSecret {
        /// `namespace/name` of the Secret.
        secret: String,
        /// The key.
        key: String,
        /// What is wrong with the value (never the value itself).
        problem: String,
    },
    /// The fleet does not exist.
    FleetNotFound {
        /// The fleet referenced.
        fleet: FleetKey,
    },
    /// The fleet does not admit the Tenant's namespace.
    NamespaceNotAllowed {
        /// The fleet referenced.
        fleet: FleetKey,
        /// The Tenant's namespace.
        namespace: String,
    },
    /// An older Tenant of the same fleet holds the externalId.
    ExternalIdConflict {
        /// The contested externalId.
        external_id: String,
        /// The fleet.
        fleet: FleetKey,
        /// `namespace/name` of the Tenant that keeps it.
        holder: String,
    },
    /// The spec cannot be rendered into a tenant document.
    InvalidSpec {
        /// The render error, naming the field.
        message: String,
    },
}

impl Rejection {
    /// The `Accepted=False` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::SecretNotFound { .. } => REASON_SECRET_NOT_FOUND,
            Rejection::SecretKeyNotFound { .. } => REASON_SECRET_KEY_NOT_FOUND,
            Rejection::InvalidSecret { .. } => REASON_INVALID_SECRET,
            Rejection::FleetNotFound { .. } => REASON_FLEET_NOT_FOUND,
            Rejection::NamespaceNotAllowed { .. } => REASON_NAMESPACE_NOT_ALLOWED,
            Rejection::ExternalIdConflict { .. } => REASON_EXTERNAL_ID_CONFLICT,
            Rejection::InvalidSpec { .. } => REASON_INVALID_SPEC,
        }
    }

    /// Whether only a change to the Tenant itself can resolve this (so the controller waits for
    /// one instead of re-checking periodically).
    pub fn needs_spec_change(&self) -> bool {
        matches!(self, Rejection::InvalidSpec { .. })
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::SecretNotFound { secret, field } => {
                write!(f, "Secret {secret} (referenced by {field}) not found")
            }
            Rejection::SecretKeyNotFound { secret, key, field } => write!(
                f,
                "Secret {secret} (referenced by {field}) has no key {key:?}"
            ),
            Rejection::InvalidSecret {
                secret,
                key,
                problem,
            } => write!(f, "key {key:?} of Secret {secret} {problem}"),
            Rejection::FleetNotFound { fleet } => write!(
                f,
                "PoolerFleet {}/{} not found (spec.fleetRef)",
                fleet.namespace, fleet.name
            ),
            Rejection::NamespaceNotAllowed { fleet, namespace } => write!(
                f,
                "PoolerFleet {}/{} does not admit Tenants of namespace {namespace:?}: add it to the fleet's spec.allowedTenantNamespaces",
                fleet.namespace, fleet.name
            ),
            Rejection::ExternalIdConflict {
                external_id,
                fleet,
                holder,
            } => write!(
                f,
                "externalId {external_id:?} is already used by Tenant {holder} in PoolerFleet {}/{} (the older Tenant keeps it): set a different spec.externalId",
                fleet.namespace, fleet.name
            ),
            Rejection::InvalidSpec { message } => write!(f, "invalid spec: {message}"),
        }
    }
}

/// What one reconcile concluded about a Tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not accepted; no document.
    Rejected(Rejection),
    /// Accepted and rendered into its document.
    Rendered {
        /// The connection string ([`endpoint`]).
        endpoint: String,
        /// The replicas the budgets were split across.
        replicas: u32,
        /// `None` when the fleet's `Available` condition is True, else why it is not.
        unavailable: Option<String>,
    },
}

/// The status the controller wants `current` (the Tenant's status as last read) to become.
///
/// `fleet` is the fleet the Tenant references (`<namespace>/<name>` in the status), `now` the
/// time of any condition flip.
pub fn desired_status(
    current: Option<&TenantStatus>,
    generation: Option<i64>,
    fleet: &FleetKey,
    outcome: &Outcome,
    now: Time,
) -> TenantStatus {
    let current = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        let last_transition_time = current
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };
    let fleet_name = format!("{}/{}", fleet.namespace, fleet.name);

    let (accepted, ready, endpoint) = match outcome {
        Outcome::Rejected(rejection) => (
            condition(
                CONDITION_ACCEPTED,
                "False",
                rejection.reason(),
                rejection.to_string(),
            ),
            condition(
                CONDITION_READY,
                "False",
                REASON_NOT_ACCEPTED,
                format!(
                    "not rendered: the Tenant is not accepted ({})",
                    rejection.reason()
                ),
            ),
            None,
        ),
        Outcome::Rendered {
            endpoint,
            replicas,
            unavailable,
        } => (
            condition(
                CONDITION_ACCEPTED,
                "True",
                REASON_ACCEPTED,
                format!("spec, Secrets and PoolerFleet {fleet_name} resolved"),
            ),
            match unavailable {
                None => condition(
                    CONDITION_READY,
                    "True",
                    REASON_RENDERED,
                    format!(
                        "rendered for PoolerFleet {fleet_name}, budgets split across {replicas} replica(s)"
                    ),
                ),
                Some(why) => condition(
                    CONDITION_READY,
                    "False",
                    REASON_FLEET_NOT_AVAILABLE,
                    format!("rendered, but PoolerFleet {fleet_name} is not available: {why}"),
                ),
            },
            Some(endpoint.clone()),
        ),
    };

    TenantStatus {
        observed_generation: generation,
        conditions: vec![accepted, ready],
        endpoint,
        fleet: Some(fleet_name),
    }
}

/// Whether `desired` differs from `current` (conditions compared regardless of order).
pub fn status_changed(current: Option<&TenantStatus>, desired: &TenantStatus) -> bool {
    let Some(current) = current else {
        return true;
    };
    let sorted = |status: &TenantStatus| {
        let mut conditions = status.conditions.clone();
        conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        conditions
    };
    current.observed_generation != desired.observed_generation
        || current.endpoint != desired.endpoint
        || current.fleet != desired.fleet
        || sorted(current) != sorted(desired)
}

/// The connection string clients use:
/// `postgresql://<user>.<externalId>@<fleet>.<fleet namespace>.svc:<pooled port>/<database>`.
///
/// `<user>` stays a placeholder (as in the CRD's documentation): a Tenant has several users, or
/// with `authQuery` any role. The host is the fleet's Service inside the cluster and the port
/// its pooled port (the tenant's own pool mode); the session port serves the same tenants in
/// session mode. The database is `upstream.database`, which clients may override.
pub fn endpoint(
    fleet: &PoolerFleet,
    fleet_key: &FleetKey,
    external_id: &str,
    database: &str,
) -> String {
    format!(
        "postgresql://<user>.{external_id}@{}.{}.svc:{}/{database}",
        fleet_key.name, fleet_key.namespace, fleet.spec.ports.pooled
    )
}

/// The condition of `type_` in `status`, if any.
pub fn condition<'a>(status: Option<&'a TenantStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// `None` when the fleet's `Available` condition is True, else a sentence saying why not.
pub fn fleet_unavailable(fleet: &PoolerFleet) -> Option<String> {
    let available = fleet.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == pgfleet_crds::fleet::CONDITION_AVAILABLE)
    });
    match available {
        Some(c) if c.status == "True" => None,
        Some(c) if !c.message.is_empty() => Some(format!("{} ({})", c.message, c.reason)),
        Some(c) => Some(format!(
            "condition Available is {} ({})",
            c.status, c.reason
        )),
        None => Some("its status reports no Available condition yet".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::fleet_with;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use pgfleet_crds::PoolerFleetStatus;

    fn t(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("timestamp"))
    }

    fn key() -> FleetKey {
        FleetKey {
            namespace: "db".into(),
            name: "edge".into(),
        }
    }

    fn rendered(unavailable: Option<&str>) -> Outcome {
        Outcome::Rendered {
            endpoint: "postgresql://<user>.acme@edge.db.svc:6543/postgres".into(),
            replicas: 2,
            unavailable: unavailable.map(str::to_string),
        }
    }

    fn find<'a>(status: &'a TenantStatus, type_: &str) -> &'a Condition {
        condition(Some(status), type_).expect("condition present")
    }

    #[test]
    fn rendered_on_an_available_fleet_is_accepted_and_ready() {
        let status = desired_status(None, Some(3), &key(), &rendered(None), t(100));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.fleet.as_deref(), Some("db/edge"));
        assert_eq!(
            status.endpoint.as_deref(),
            Some("postgresql://<user>.acme@edge.db.svc:6543/postgres")
        );
        let accepted = find(&status, CONDITION_ACCEPTED);
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("True", "Accepted")
        );
        assert_eq!(accepted.observed_generation, Some(3));
        let ready = find(&status, CONDITION_READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Rendered")
        );
        assert!(ready.message.contains("2 replica"), "{}", ready.message);

        let status = desired_status(None, Some(3), &key(), &rendered(Some("no pods")), t(100));
        let ready = find(&status, CONDITION_READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "FleetNotAvailable")
        );
        assert!(ready.message.contains("no pods"), "{}", ready.message);
    }

    #[test]
    fn rejections_name_what_is_wrong() {
        let cases = [
            (
                Rejection::SecretNotFound {
                    secret: "team-a/app-pw".into(),
                    field: "spec.users[0].passwordSecretRef".into(),
                },
                "SecretNotFound",
                "team-a/app-pw",
            ),
            (
                Rejection::SecretKeyNotFound {
                    secret: "team-a/app-pw".into(),
                    key: "password".into(),
                    field: "spec.users[0].passwordSecretRef".into(),
                },
                "SecretKeyNotFound",
                "\"password\"",
            ),
            (
                Rejection::InvalidSecret {
                    secret: "team-a/app-pw".into(),
                    key: "password".into(),
                    problem: "is empty".into(),
                },
                "InvalidSecret",
                "is empty",
            ),
            (
                Rejection::FleetNotFound { fleet: key() },
                "FleetNotFound",
                "db/edge",
            ),
            (
                Rejection::NamespaceNotAllowed {
                    fleet: key(),
                    namespace: "team-a".into(),
                },
                "NamespaceNotAllowed",
                "allowedTenantNamespaces",
            ),
            (
                Rejection::ExternalIdConflict {
                    external_id: "acme".into(),
                    fleet: key(),
                    holder: "team-b/first".into(),
                },
                "ExternalIdConflict",
                "team-b/first",
            ),
            (
                Rejection::InvalidSpec {
                    message: "spec.upstream.port: must be between 1 and 65535".into(),
                },
                "InvalidSpec",
                "spec.upstream.port",
            ),
        ];
        for (rejection, reason, named) in cases {
            let status = desired_status(
                None,
                Some(1),
                &key(),
                &Outcome::Rejected(rejection.clone()),
                t(5),
            );
            let accepted = find(&status, CONDITION_ACCEPTED);
            assert_eq!(accepted.status, "False");
            assert_eq!(accepted.reason, reason);
            assert!(accepted.message.contains(named), "{}", accepted.message);
            let ready = find(&status, CONDITION_READY);
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", "NotAccepted")
            );
            assert_eq!(status.endpoint, None, "no endpoint without a document");
            assert_eq!(status.fleet.as_deref(), Some("db/edge"));
            assert_eq!(rejection.needs_spec_change(), reason == "InvalidSpec");
        }
    }

    #[test]
    fn transition_times_survive_until_the_status_flips() {
        let missing = Outcome::Rejected(Rejection::FleetNotFound { fleet: key() });
        let first = desired_status(None, Some(1), &key(), &missing, t(100));
        assert!(status_changed(None, &first));

        // Same outcome later: identical status, nothing to write.
        let again = desired_status(Some(&first), Some(1), &key(), &missing, t(200));
        assert_eq!(again, first);
        assert!(!status_changed(Some(&first), &again));

        // Another reason, still False: the time stays, the status changes.
        let secret = Outcome::Rejected(Rejection::SecretNotFound {
            secret: "a/b".into(),
            field: "f".into(),
        });
        let other = desired_status(Some(&first), Some(1), &key(), &secret, t(300));
        assert_eq!(
            find(&other, CONDITION_ACCEPTED).last_transition_time,
            t(100)
        );
        assert!(status_changed(Some(&first), &other));

        // A flip takes the new time; Ready stays False so it keeps its time.
        let ok = desired_status(Some(&other), Some(1), &key(), &rendered(Some("x")), t(400));
        assert_eq!(find(&ok, CONDITION_ACCEPTED).last_transition_time, t(400));
        assert_eq!(find(&ok, CONDITION_READY).last_transition_time, t(100));

        // A new generation alone is a change.
        let next = desired_status(Some(&ok), Some(2), &key(), &rendered(Some("x")), t(500));
        assert!(status_changed(Some(&ok), &next));
        let mut reordered = next.clone();
        reordered.conditions.reverse();
        assert!(
            !status_changed(Some(&reordered), &next),
            "order does not matter"
        );
    }

    #[test]
    fn endpoint_uses_the_fleets_service_and_pooled_port() {
        let f = fleet_with(
            "edge",
            "db",
            "ports: {pooled: 7000, session: 5432, admin: 8080}",
        );
        assert_eq!(
            endpoint(&f, &key(), "acme", "app"),
            "postgresql://<user>.acme@edge.db.svc:7000/app"
        );
        let f = fleet_with("edge", "db", "{}");
        assert_eq!(
            endpoint(&f, &key(), "acme_prod", "postgres"),
            "postgresql://<user>.acme_prod@edge.db.svc:6543/postgres"
        );
    }

    #[test]
    fn fleet_availability_comes_from_its_available_condition() {
        let mut f = fleet_with("edge", "db", "{}");
        assert!(fleet_unavailable(&f).is_some(), "no status yet");
        let available = |status: &str| Condition {
            type_: "Available".into(),
            status: status.into(),
            reason: "NoReplicasAvailable".into(),
            message: "no pooler replica is available yet".into(),
            observed_generation: Some(1),
            last_transition_time: t(1),
        };
        f.status = Some(PoolerFleetStatus {
            conditions: vec![available("False")],
            ..PoolerFleetStatus::default()
        });
        let why = fleet_unavailable(&f).expect("unavailable");
        assert!(why.contains("no pooler replica"), "{why}");
        f.status = Some(PoolerFleetStatus {
            conditions: vec![available("True")],
            ..PoolerFleetStatus::default()
        });
        assert_eq!(fleet_unavailable(&f), None);
    }
}
