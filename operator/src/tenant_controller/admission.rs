//! Whether a fleet takes a Tenant: the fleet exists, admits the Tenant's namespace, and no
//! older Tenant of that fleet uses the same externalId.
//!
//! # externalId claims
//!
//! A Tenant *claims* `(fleet, externalId)` when it references the fleet and the fleet admits
//! its namespace. Among the claimants the oldest (by `creationTimestamp`, then namespace, then
//! name, so the order is total and stable) keeps the id; every other one is rejected with
//! `ExternalIdConflict` naming the holder. A claim depends only on the Tenants' metadata and
//! specs and on the fleet, never on their Secrets or status, so it cannot flap: a holder whose
//! Secret is missing (and so serves nothing for now) still keeps its id, and a Tenant being
//! deleted keeps it until it is gone, when the next claimant takes over.

use std::cmp::Ordering;

use pgfleet_crds::{PoolerFleet, Tenant};

use super::status::Rejection;
use crate::resources::FleetKey;

/// The externalId a Tenant claims in a fleet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimKey {
    /// The fleet's namespace.
    pub fleet_namespace: String,
    /// The fleet's name.
    pub fleet_name: String,
    /// The effective externalId (`spec.externalId`, else `metadata.name`).
    pub external_id: String,
}

impl ClaimKey {
    /// The claim of `tenant`, whether or not its fleet admits it; `None` without a name or
    /// namespace.
    pub fn of(tenant: &Tenant) -> Option<ClaimKey> {
        let name = tenant.metadata.name.as_deref()?;
        let fleet = FleetKey::of(tenant).ok()?;
        Some(ClaimKey {
            fleet_namespace: fleet.namespace,
            fleet_name: fleet.name,
            external_id: tenant.spec.effective_external_id(name).to_string(),
        })
    }

    /// Whether this claim is in `fleet`.
    pub fn in_fleet(&self, namespace: &str, name: &str) -> bool {
        self.fleet_namespace == namespace && self.fleet_name == name
    }
}

/// Checks that `fleet` (the one `key` names) admits Tenants of `tenant_namespace`: its own
/// namespace always, others when listed in `allowedTenantNamespaces` (`"*"`: all).
pub fn admit_namespace(
    fleet: &PoolerFleet,
    key: &FleetKey,
    tenant_namespace: &str,
) -> Result<(), Rejection> {
    if fleet
        .spec
        .admits_namespace(&key.namespace, tenant_namespace)
    {
        Ok(())
    } else {
        Err(Rejection::NamespaceNotAllowed {
            fleet: key.clone(),
            namespace: tenant_namespace.to_string(),
        })
    }
}

/// The order in which claimants get an externalId: oldest first, ties (and Tenants without a
/// timestamp, last) broken by namespace and name.
pub fn claim_order(a: &Tenant, b: &Tenant) -> Ordering {
    let rank = |t: &Tenant| {
        (
            t.metadata.creation_timestamp.is_none(),
            t.metadata.creation_timestamp.as_ref().map(|ts| ts.0),
        )
    };
    rank(a)
        .cmp(&rank(b))
        .then_with(|| a.metadata.namespace.cmp(&b.metadata.namespace))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Checks that no other claimant of `tenant`'s externalId in `fleet` comes before it.
///
/// `others` are the Tenants the controller knows (it may include `tenant` itself, which is
/// skipped by namespace and name).
pub fn check_external_id<'a>(
    tenant: &Tenant,
    fleet: &PoolerFleet,
    others: impl IntoIterator<Item = &'a Tenant>,
) -> Result<(), Rejection> {
    let Some(key) = ClaimKey::of(tenant) else {
        return Ok(());
    };
    let fleet_key = FleetKey {
        namespace: key.fleet_namespace.clone(),
        name: key.fleet_name.clone(),
    };
    let same = |t: &Tenant| {
        t.metadata.namespace == tenant.metadata.namespace && t.metadata.name == tenant.metadata.name
    };
    let holder = others
        .into_iter()
        .filter(|other| !same(other))
        .filter(|other| ClaimKey::of(other).as_ref() == Some(&key))
        .filter(|other| {
            other
                .metadata
                .namespace
                .as_deref()
                .is_some_and(|ns| fleet.spec.admits_namespace(&fleet_key.namespace, ns))
        })
        .filter(|other| claim_order(other, tenant) == Ordering::Less)
        .min_by(|a, b| claim_order(a, b));
    match holder {
        None => Ok(()),
        Some(holder) => Err(Rejection::ExternalIdConflict {
            external_id: key.external_id,
            fleet: fleet_key,
            holder: format!(
                "{}/{}",
                holder.metadata.namespace.as_deref().unwrap_or_default(),
                holder.metadata.name.as_deref().unwrap_or_default()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::{fleet_with, tenant};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const USERS: &str =
        "upstream: {host: h}\nusers: [{name: app, passwordSecretRef: {name: s, key: k}}]\n";

    fn at(name: &str, namespace: &str, extra: &str, seconds: Option<i64>) -> Tenant {
        let mut t = tenant(name, namespace, &format!("{extra}{USERS}"));
        t.metadata.creation_timestamp =
            seconds.map(|s| Time(k8s_openapi::jiff::Timestamp::from_second(s).expect("timestamp")));
        t
    }

    fn key(ns: &str, name: &str) -> FleetKey {
        FleetKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn claim_keys_follow_fleet_ref_and_external_id() {
        let t = at("acme", "team-a", "", Some(1));
        assert_eq!(
            ClaimKey::of(&t),
            Some(ClaimKey {
                fleet_namespace: "team-a".into(),
                fleet_name: "default".into(),
                external_id: "acme".into(),
            })
        );
        let t = at(
            "acme",
            "team-a",
            "externalId: acme_prod\nfleetRef: {name: edge, namespace: db}\n",
            Some(1),
        );
        let claim = ClaimKey::of(&t).expect("claim");
        assert_eq!(claim.external_id, "acme_prod");
        assert!(claim.in_fleet("db", "edge"));
        assert!(!claim.in_fleet("team-a", "edge"));
    }

    #[test]
    fn namespaces_are_admitted_as_the_fleet_says() {
        let f = fleet_with("edge", "db", "{}");
        assert_eq!(admit_namespace(&f, &key("db", "edge"), "db"), Ok(()));
        assert_eq!(
            admit_namespace(&f, &key("db", "edge"), "team-a"),
            Err(Rejection::NamespaceNotAllowed {
                fleet: key("db", "edge"),
                namespace: "team-a".into()
            })
        );
        let f = fleet_with("edge", "db", "allowedTenantNamespaces: [team-a]");
        assert_eq!(admit_namespace(&f, &key("db", "edge"), "team-a"), Ok(()));
        assert!(admit_namespace(&f, &key("db", "edge"), "team-b").is_err());
        let f = fleet_with("edge", "db", "allowedTenantNamespaces: ['*']");
        assert_eq!(admit_namespace(&f, &key("db", "edge"), "team-b"), Ok(()));
    }

    #[test]
    fn the_oldest_claimant_keeps_the_external_id() {
        let f = fleet_with("edge", "db", "allowedTenantNamespaces: ['*']");
        let fleet_ref = "fleetRef: {name: edge, namespace: db}\nexternalId: acme\n";
        let first = at("one", "team-b", fleet_ref, Some(10));
        let second = at("two", "team-a", fleet_ref, Some(20));
        let all = [first.clone(), second.clone()];
        assert_eq!(check_external_id(&first, &f, &all), Ok(()));
        assert_eq!(
            check_external_id(&second, &f, &all),
            Err(Rejection::ExternalIdConflict {
                external_id: "acme".into(),
                fleet: key("db", "edge"),
                holder: "team-b/one".into(),
            })
        );
        // Without the holder, the next one takes over.
        assert_eq!(check_external_id(&second, &f, [&second]), Ok(()));

        // Same timestamp: namespace, then name, decide; no timestamp comes last.
        let a = at("a", "team-a", fleet_ref, Some(10));
        let b = at("b", "team-a", fleet_ref, Some(10));
        let none = at("0", "team-0", fleet_ref, None);
        assert_eq!(claim_order(&a, &b), Ordering::Less);
        assert_eq!(
            claim_order(&first, &a),
            Ordering::Greater,
            "team-a < team-b"
        );
        assert_eq!(claim_order(&none, &a), Ordering::Greater);
        let all = [none.clone(), b.clone(), a.clone()];
        match check_external_id(&none, &f, &all) {
            Err(Rejection::ExternalIdConflict { holder, .. }) => assert_eq!(holder, "team-a/a"),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn only_claims_in_the_same_fleet_by_admitted_namespaces_count() {
        let f = fleet_with("edge", "db", "allowedTenantNamespaces: [team-a]");
        let fleet_ref = "fleetRef: {name: edge, namespace: db}\nexternalId: acme\n";
        let me = at("me", "team-a", fleet_ref, Some(20));
        // Older, same id, but in a namespace the fleet does not admit.
        let outsider = at("old", "team-b", fleet_ref, Some(10));
        // Older, same id, another fleet.
        let elsewhere = at(
            "other",
            "team-a",
            "fleetRef: {name: other, namespace: db}\nexternalId: acme\n",
            Some(10),
        );
        // Older, same fleet, another id.
        let different = at(
            "diff",
            "team-a",
            "fleetRef: {name: edge, namespace: db}\n",
            Some(10),
        );
        assert_eq!(
            check_external_id(&me, &f, [&outsider, &elsewhere, &different, &me]),
            Ok(())
        );
        // The name is the default externalId.
        let named = at(
            "acme",
            "team-a",
            "fleetRef: {name: edge, namespace: db}\n",
            Some(5),
        );
        assert!(check_external_id(&me, &f, [&named]).is_err());
    }
}
