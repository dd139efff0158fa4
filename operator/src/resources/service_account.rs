//! The poolers' ServiceAccount, `<fleet>-pooler`.
//!
//! A dedicated identity per fleet, so the Role that lets pods read tenant documents binds to
//! these pods only, not to every pod running as the namespace's `default` account.

use k8s_openapi::api::core::v1::ServiceAccount;
use pgfleet_crds::PoolerFleet;

use super::error::BuildError;
use super::meta::FleetIdentity;

/// The fleet's ServiceAccount.
///
/// The token stays mounted (the default): the pooler's Kubernetes tenant source watches the
/// API server with it.
pub fn service_account(fleet: &PoolerFleet) -> Result<ServiceAccount, BuildError> {
    let id = FleetIdentity::of(fleet)?;
    Ok(ServiceAccount {
        metadata: id.child_meta(id.pooler_identity_name()),
        ..ServiceAccount::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::meta::fleet_labels;
    use crate::resources::test_support::fleet;

    #[test]
    fn named_labelled_and_owned() {
        let sa = service_account(&fleet("edge", "db")).expect("builds");
        assert_eq!(sa.metadata.name.as_deref(), Some("edge-pooler"));
        assert_eq!(sa.metadata.namespace.as_deref(), Some("db"));
        assert_eq!(sa.metadata.labels, Some(fleet_labels("edge")));
        let owners = sa.metadata.owner_references.expect("owned");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "uid-edge");
        assert_eq!(owners[0].controller, Some(true));
    }

    #[test]
    fn refuses_an_unpersisted_fleet() {
        let mut f = fleet("edge", "db");
        f.metadata.uid = None;
        assert_eq!(service_account(&f), Err(BuildError::MissingMetadata("uid")));
    }
}
