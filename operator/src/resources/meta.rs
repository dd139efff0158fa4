//! Names, labels and owner references shared by every child of a fleet.
//!
//! Everything derives from the fleet's name, so the operator can find (and a person can guess)
//! each child without a lookup table, and the fleet name's 52-character limit (enforced by the
//! CRD) leaves room for the `-pooler` suffix within the 63 characters of a label value.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use pgfleet_crds::PoolerFleet;

use super::error::BuildError;

/// `app.kubernetes.io/name`: what the pods run.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: which fleet.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`: who applies the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `pgfleet.io/fleet`: the fleet an object belongs to. On tenant-document Secrets it is what
/// the fleet's poolers select on.
pub const LABEL_FLEET: &str = "pgfleet.io/fleet";

/// The value of [`LABEL_NAME`] on every fleet child.
pub const APP_NAME: &str = "pgfleet-pooler";
/// The value of [`LABEL_MANAGED_BY`] on every object the operator writes.
pub const MANAGED_BY: &str = "pgfleet-operator";

/// The fleet's identity as its children need it: validated once, so builders never deal with
/// missing metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetIdentity {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`: every child lives there.
    pub namespace: String,
    /// `metadata.uid`, for owner references.
    pub uid: String,
}

impl FleetIdentity {
    /// Reads the identity of a fleet as read from the API server.
    ///
    /// A fleet built in memory and never persisted has no uid; an owner reference without one
    /// would be refused by the API server, so the builders refuse it first.
    pub fn of(fleet: &PoolerFleet) -> Result<Self, BuildError> {
        let meta = &fleet.metadata;
        let name = meta
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or(BuildError::MissingMetadata("name"))?;
        let namespace = meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let uid = meta
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or(BuildError::MissingMetadata("uid"))?;
        Ok(FleetIdentity {
            name,
            namespace,
            uid,
        })
    }

    /// The controller owner reference every child carries.
    ///
    /// `controller: true` lets `Controller::owns()` map child events back to the fleet and stops
    /// another controller from adopting the child; `blockOwnerDeletion: true` makes a
    /// foreground deletion of the fleet wait for its children.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: PoolerFleet::api_version(&()).into_owned(),
            kind: PoolerFleet::kind(&()).into_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// Metadata for a child named `name`: the fleet's namespace and labels, and the owner
    /// reference.
    pub fn child_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(fleet_labels(&self.name)),
            owner_references: Some(vec![self.owner_reference()]),
            ..ObjectMeta::default()
        }
    }

    /// Name of the Deployment, the Service and the PodDisruptionBudget: the fleet's own, so the
    /// Service DNS name clients use is `<fleet>.<namespace>.svc`.
    pub fn workload_name(&self) -> String {
        self.name.clone()
    }

    /// Name of the ServiceAccount, Role and RoleBinding: `<fleet>-pooler`, so they read as the
    /// poolers' identity, not the fleet's.
    pub fn pooler_identity_name(&self) -> String {
        format!("{}-pooler", self.name)
    }
}

/// The labels that select a fleet's pods: the Deployment's selector, the Service's and the
/// PodDisruptionBudget's.
///
/// Kept to the two standard labels and never extended: a Deployment's selector is immutable, so
/// adding a label here later would force deleting and recreating every fleet's Deployment.
pub fn selector_labels(fleet: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), fleet.to_string()),
    ])
}

/// Every label of a fleet's children and pods: the selector labels, who manages them, and the
/// fleet (for `kubectl get all -l pgfleet.io/fleet=<fleet>`).
pub fn fleet_labels(fleet: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(fleet);
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
    labels.insert(LABEL_FLEET.to_string(), fleet.to_string());
    labels
}

/// The pod selector as a string (`key=value,...`), for the fleet's `status.selector`, which the
/// scale subresource hands to a HorizontalPodAutoscaler.
pub fn selector_string(fleet: &str) -> String {
    selector_labels(fleet)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::fleet;

    #[test]
    fn identity_needs_name_namespace_and_uid() {
        let mut f = fleet("edge", "db");
        assert!(FleetIdentity::of(&f).is_ok());
        f.metadata.uid = None;
        assert_eq!(
            FleetIdentity::of(&f),
            Err(BuildError::MissingMetadata("uid"))
        );
        f.metadata.namespace = Some(String::new());
        assert_eq!(
            FleetIdentity::of(&f),
            Err(BuildError::MissingMetadata("namespace"))
        );
        f.metadata.name = None;
        assert_eq!(
            FleetIdentity::of(&f),
            Err(BuildError::MissingMetadata("name"))
        );
    }

    #[test]
    fn owner_reference_points_at_the_fleet_as_controller() {
        let id = FleetIdentity::of(&fleet("edge", "db")).expect("identity");
        let owner = id.owner_reference();
        assert_eq!(owner.api_version, "pgfleet.io/v1alpha1");
        assert_eq!(owner.kind, "PoolerFleet");
        assert_eq!(owner.name, "edge");
        assert_eq!(owner.uid, "uid-edge");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
    }

    #[test]
    fn labels_and_selector() {
        let labels = fleet_labels("edge");
        assert_eq!(labels.len(), 4);
        assert_eq!(labels[LABEL_NAME], "pgfleet-pooler");
        assert_eq!(labels[LABEL_INSTANCE], "edge");
        assert_eq!(labels[LABEL_MANAGED_BY], "pgfleet-operator");
        assert_eq!(labels[LABEL_FLEET], "edge");
        for (k, v) in selector_labels("edge") {
            assert_eq!(
                labels.get(&k),
                Some(&v),
                "selector label {k} on every child"
            );
        }
        assert_eq!(
            selector_string("edge"),
            "app.kubernetes.io/instance=edge,app.kubernetes.io/name=pgfleet-pooler"
        );
    }

    #[test]
    fn names_derive_from_the_fleet() {
        let id = FleetIdentity::of(&fleet("edge", "db")).expect("identity");
        assert_eq!(id.workload_name(), "edge");
        assert_eq!(id.pooler_identity_name(), "edge-pooler");
        let meta = id.child_meta("x".into());
        assert_eq!(meta.namespace.as_deref(), Some("db"));
        assert_eq!(meta.labels, Some(fleet_labels("edge")));
        assert_eq!(meta.owner_references, Some(vec![id.owner_reference()]));
    }
}
