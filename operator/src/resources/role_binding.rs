//! The poolers' RoleBinding, `<fleet>-pooler`: the fleet's Role for the fleet's ServiceAccount.

use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use pgfleet_crds::PoolerFleet;

use super::error::BuildError;
use super::meta::FleetIdentity;

/// Binds the fleet's Role to its ServiceAccount, both named `<fleet>-pooler`.
///
/// `roleRef` is immutable in Kubernetes; deriving it from the fleet name keeps it constant for
/// the life of the fleet, so applying never needs a delete-and-recreate.
pub fn role_binding(fleet: &PoolerFleet) -> Result<RoleBinding, BuildError> {
    let id = FleetIdentity::of(fleet)?;
    let name = id.pooler_identity_name();
    Ok(RoleBinding {
        metadata: id.child_meta(name.clone()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            api_group: Some(String::new()),
            kind: "ServiceAccount".into(),
            name,
            namespace: Some(id.namespace.clone()),
        }]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::meta::fleet_labels;
    use crate::resources::test_support::fleet;

    #[test]
    fn binds_the_fleet_role_to_the_fleet_account() {
        let rb = role_binding(&fleet("edge", "db")).expect("builds");
        assert_eq!(rb.metadata.name.as_deref(), Some("edge-pooler"));
        assert_eq!(rb.metadata.namespace.as_deref(), Some("db"));
        assert_eq!(rb.metadata.labels, Some(fleet_labels("edge")));
        assert_eq!(
            rb.metadata.owner_references.expect("owned")[0].kind,
            "PoolerFleet"
        );
        assert_eq!(rb.role_ref.kind, "Role");
        assert_eq!(rb.role_ref.name, "edge-pooler");
        assert_eq!(
            rb.role_ref.api_group.as_deref(),
            Some("rbac.authorization.k8s.io")
        );
        let subjects = rb.subjects.expect("subjects");
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "edge-pooler");
        assert_eq!(subjects[0].namespace.as_deref(), Some("db"));
    }
}
