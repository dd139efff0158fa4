//! The poolers' Role, `<fleet>-pooler`: read the tenant-document Secrets of the fleet.
//!
//! # Scope: every Secret in the fleet's namespace
//!
//! A pooler lists and watches tenant-document Secrets by label (`pgfleet.io/fleet=<fleet>`),
//! so a new tenant reaches every replica in well under a second. RBAC cannot narrow that:
//!
//! - rules cannot filter by label, so a label-selected `list`/`watch` needs `list`/`watch` on
//!   all Secrets of the namespace;
//! - `resourceNames` restricts `get`, and `list`/`watch` only when the request names a single
//!   object (`fieldSelector=metadata.name=<x>`). A collection watch across tenants, whose set
//!   changes at runtime, cannot be expressed with it; keeping the names current would also mean
//!   rewriting the Role, and restarting the watch, on every tenant added or removed.
//!
//! So the Role grants `get`, `list` and `watch` on every Secret in the fleet's namespace, and
//! nothing else (no writes, no other resources, no other namespace). Tenant documents always
//! live in the fleet's namespace, whichever namespace their Tenant is in, and users' password
//! Secrets stay with their Tenants, which the poolers cannot read.
//!
//! **Recommendation: give each fleet a dedicated namespace** (or one shared only by fleets),
//! holding nothing but tenant documents and the fleet's TLS certificate. The poolers can read
//! any other Secret placed there.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use pgfleet_crds::PoolerFleet;

use super::error::BuildError;
use super::meta::FleetIdentity;

/// The verbs a label-selected informer on Secrets needs: the initial list, the watch, and get
/// for a re-read after a watch error.
pub const SECRET_VERBS: [&str; 3] = ["get", "list", "watch"];

/// The fleet's Role: read-only access to Secrets in the fleet's namespace (see the module
/// documentation for why it cannot be narrower).
pub fn role(fleet: &PoolerFleet) -> Result<Role, BuildError> {
    let id = FleetIdentity::of(fleet)?;
    Ok(Role {
        metadata: id.child_meta(id.pooler_identity_name()),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: SECRET_VERBS.iter().map(|v| v.to_string()).collect(),
            ..PolicyRule::default()
        }]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::meta::fleet_labels;
    use crate::resources::test_support::fleet;

    #[test]
    fn grants_read_of_secrets_only() {
        let role = role(&fleet("edge", "db")).expect("builds");
        assert_eq!(role.metadata.name.as_deref(), Some("edge-pooler"));
        assert_eq!(role.metadata.namespace.as_deref(), Some("db"));
        assert_eq!(role.metadata.labels, Some(fleet_labels("edge")));
        assert_eq!(
            role.metadata.owner_references.expect("owned")[0].name,
            "edge"
        );
        let rules = role.rules.expect("rules");
        assert_eq!(rules.len(), 1);
        let rule = &rules[0];
        assert_eq!(rule.api_groups, Some(vec![String::new()]));
        assert_eq!(rule.resources, Some(vec!["secrets".to_string()]));
        assert_eq!(rule.verbs, ["get", "list", "watch"]);
        assert_eq!(rule.resource_names, None);
        assert!(
            !rule
                .verbs
                .iter()
                .any(|v| ["create", "update", "patch", "delete", "*"].contains(&v.as_str())),
            "read-only"
        );
    }
}
