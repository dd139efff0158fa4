//! What wakes a Tenant up: the watch streams feeding the controller and the mappers from other
//! objects back to Tenants.
//!
//! - **Tenants** go through the controller's own reflector first, so when a trigger fires the
//!   store already holds the change. Besides the Tenant itself, a change of its externalId
//!   claim (a new Tenant, a deleted one, an edited `externalId` or `fleetRef`) wakes the other
//!   claimants of the old and the new claim, which is how the next Tenant in line takes over
//!   an externalId its holder gave up. After every (re)list, every Tenant is reconciled once
//!   the store is complete.
//! - **PoolerFleets** wake the Tenants that reference them, but only when something a Tenant
//!   depends on changed: existence, replicas (spec or status), pooled port, admitted
//!   namespaces, the `Available` condition. The fleet controller's other status updates do not
//!   re-render every tenant of the fleet.
//! - **Secrets** (metadata only: the operator never holds Secrets it has no use for) wake the
//!   Tenants of their namespace that reference them, and, for tenant-document Secrets (label
//!   `pgfleet.io/tenant`), the Tenant whose document it is, so a document deleted or edited
//!   behind the operator's back is put back.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{Stream, StreamExt as _, stream};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt as _;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store, reflector};
use kube::runtime::watcher;
use pgfleet_crds::fleet::CONDITION_AVAILABLE;
use pgfleet_crds::{PoolerFleet, Tenant};

use super::admission::ClaimKey;
use super::resolve::references_secret;
use crate::resources::FleetKey;
use crate::resources::tenant_secret::{LABEL_TENANT, LABEL_TENANT_NAMESPACE};

/// Which Tenant (namespace, name) claims what.
#[derive(Debug, Default)]
pub struct ClaimIndex {
    claims: HashMap<(String, String), ClaimKey>,
    relisting: Option<HashMap<(String, String), ClaimKey>>,
}

fn id(tenant: &Tenant) -> (String, String) {
    (tenant.namespace().unwrap_or_default(), tenant.name_any())
}

impl ClaimIndex {
    /// The Tenants to reconcile after `event`; `store` gives every Tenant known, the event
    /// included (called only when other Tenants are concerned).
    pub fn triggers(
        &mut self,
        event: &watcher::Event<Tenant>,
        store: impl FnOnce() -> Vec<Arc<Tenant>>,
    ) -> Vec<Tenant> {
        match event {
            watcher::Event::Apply(tenant) => {
                let new = ClaimKey::of(tenant);
                let old = match &new {
                    Some(claim) => self.claims.insert(id(tenant), claim.clone()),
                    None => self.claims.remove(&id(tenant)),
                };
                let mut out = vec![tenant.clone()];
                if old != new {
                    out.extend(peers(&store(), tenant, [old, new]));
                }
                out
            }
            watcher::Event::Delete(tenant) => {
                let old = self.claims.remove(&id(tenant));
                peers(&store(), tenant, [old, None])
            }
            watcher::Event::Init => {
                self.relisting = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(tenant) => {
                if let (Some(relisting), Some(claim)) = (&mut self.relisting, ClaimKey::of(tenant))
                {
                    relisting.insert(id(tenant), claim);
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                self.claims = self.relisting.take().unwrap_or_default();
                store().iter().map(|t| (**t).clone()).collect()
            }
        }
    }
}

/// The Tenants of `store` other than `tenant` that claim one of `claims`.
fn peers(store: &[Arc<Tenant>], tenant: &Tenant, claims: [Option<ClaimKey>; 2]) -> Vec<Tenant> {
    let me = id(tenant);
    let claims: Vec<ClaimKey> = claims.into_iter().flatten().collect();
    store
        .iter()
        .filter(move |other| id(other) != me)
        .filter(move |other| ClaimKey::of(other).is_some_and(|c| claims.contains(&c)))
        .map(|other| (**other).clone())
        .collect()
}

/// The Tenant trigger stream: `events` reflected into `writer` (whose reader is `store`), then
/// turned into the Tenants to reconcile (see the module documentation).
pub fn tenant_triggers(
    events: impl Stream<Item = watcher::Result<watcher::Event<Tenant>>> + Send + 'static,
    writer: Writer<Tenant>,
    store: Store<Tenant>,
) -> impl Stream<Item = Result<Tenant, watcher::Error>> + Send + 'static {
    let mut index = ClaimIndex::default();
    reflector(writer, events).flat_map(move |event| {
        let items: Vec<Result<Tenant, watcher::Error>> = match event {
            Ok(event) => index
                .triggers(&event, || store.state())
                .into_iter()
                .map(Ok)
                .collect(),
            Err(error) => vec![Err(error)],
        };
        stream::iter(items)
    })
}

/// What Tenants use of a fleet; a change of it re-renders them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetView {
    uid: Option<String>,
    spec_replicas: i32,
    status_replicas: Option<i32>,
    pooled_port: i32,
    allowed_tenant_namespaces: Vec<String>,
    available: Option<(String, String, String)>,
}

impl FleetView {
    /// The parts of `fleet` Tenants depend on.
    pub fn of(fleet: &PoolerFleet) -> FleetView {
        let status = fleet.status.as_ref();
        FleetView {
            uid: fleet.metadata.uid.clone(),
            spec_replicas: fleet.spec.replicas,
            status_replicas: status.and_then(|s| s.replicas),
            pooled_port: fleet.spec.ports.pooled,
            allowed_tenant_namespaces: fleet.spec.allowed_tenant_namespaces.clone(),
            available: status.and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == CONDITION_AVAILABLE)
                    .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
            }),
        }
    }
}

/// Passes a fleet on when it appears, disappears, or its [`FleetView`] changes.
#[derive(Debug, Default)]
pub struct FleetChanges {
    seen: HashMap<(String, String), FleetView>,
}

impl FleetChanges {
    /// The fleet to pass on after `event`, if any.
    pub fn filter(&mut self, event: watcher::Event<PoolerFleet>) -> Option<PoolerFleet> {
        match event {
            watcher::Event::Apply(fleet) | watcher::Event::InitApply(fleet) => {
                let key = (fleet.namespace().unwrap_or_default(), fleet.name_any());
                let view = FleetView::of(&fleet);
                (self.seen.insert(key, view.clone()) != Some(view)).then_some(fleet)
            }
            watcher::Event::Delete(fleet) => {
                self.seen
                    .remove(&(fleet.namespace().unwrap_or_default(), fleet.name_any()));
                Some(fleet)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }
}

/// The fleet events that matter to Tenants (see [`FleetChanges`]).
pub fn fleet_changes(
    events: impl Stream<Item = watcher::Result<watcher::Event<PoolerFleet>>> + Send + 'static,
) -> impl Stream<Item = Result<PoolerFleet, watcher::Error>> + Send + 'static {
    let mut changes = FleetChanges::default();
    events.filter_map(move |event| {
        let item = match event {
            Ok(event) => changes.filter(event).map(Ok),
            Err(error) => Some(Err(error)),
        };
        std::future::ready(item)
    })
}

/// The Tenants of `tenants` that reference `fleet`.
pub fn tenants_of_fleet(tenants: &[Arc<Tenant>], fleet: &PoolerFleet) -> Vec<ObjectRef<Tenant>> {
    let target = FleetKey {
        namespace: fleet.namespace().unwrap_or_default(),
        name: fleet.name_any(),
    };
    tenants
        .iter()
        .filter(|t| FleetKey::of(t).is_ok_and(|k| k == target))
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

/// The Tenants a Secret event concerns: those of its namespace referencing it, and for a
/// tenant-document Secret the Tenant whose document it is.
pub fn tenants_for_secret(tenants: &[Arc<Tenant>], secret: &ObjectMeta) -> Vec<ObjectRef<Tenant>> {
    let namespace = secret.namespace.as_deref().unwrap_or_default();
    let name = secret.name.as_deref().unwrap_or_default();
    let mut refs: Vec<ObjectRef<Tenant>> = tenants
        .iter()
        .filter(|t| t.namespace().as_deref() == Some(namespace))
        .filter(|t| references_secret(&t.spec, name))
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect();
    if let Some(owner) = document_owner(secret)
        && !refs.contains(&owner)
    {
        refs.push(owner);
    }
    refs
}

/// The Tenant a tenant-document Secret belongs to, from its labels and annotation (the label
/// may be a shortened form of a long name; the annotation has it whole).
pub fn document_owner(secret: &ObjectMeta) -> Option<ObjectRef<Tenant>> {
    let labels = secret.labels.as_ref()?;
    let label = labels.get(LABEL_TENANT)?;
    let namespace = labels.get(LABEL_TENANT_NAMESPACE)?;
    let name = secret
        .annotations
        .as_ref()
        .and_then(|a| a.get(LABEL_TENANT))
        .unwrap_or(label);
    Some(ObjectRef::new(name).within(namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::{fleet_with, tenant};
    use std::collections::BTreeMap;

    const USERS: &str = "upstream: {host: h}\nusers: [{name: app, passwordSecretRef: {name: app-pw, key: password}}]\n";

    fn t(name: &str, ns: &str, extra: &str) -> Tenant {
        tenant(name, ns, &format!("{extra}{USERS}"))
    }

    fn names(tenants: &[Tenant]) -> Vec<String> {
        tenants.iter().map(|t| t.name_any()).collect()
    }

    fn refs(refs: &[ObjectRef<Tenant>]) -> Vec<String> {
        refs.iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name))
            .collect()
    }

    #[test]
    fn claim_changes_wake_the_other_claimants() {
        let mut index = ClaimIndex::default();
        let a = t("a", "ns", "externalId: acme\n");
        let b = t("b", "ns", "externalId: acme\n");
        let c = t("c", "ns", "externalId: other\n");
        let store: Vec<Arc<Tenant>> = [&a, &b, &c].map(|t| Arc::new(t.clone())).to_vec();

        // The initial list: nothing until it is complete, then everyone.
        assert!(
            index
                .triggers(&watcher::Event::Init, || store.clone())
                .is_empty()
        );
        for x in [&a, &b, &c] {
            assert!(
                index
                    .triggers(&watcher::Event::InitApply(x.clone()), || store.clone())
                    .is_empty()
            );
        }
        assert_eq!(
            names(&index.triggers(&watcher::Event::InitDone, || store.clone())),
            ["a", "b", "c"]
        );

        // An update that keeps the claim wakes only the Tenant itself.
        let mut a2 = a.clone();
        a2.spec.default_pool_size = 3;
        assert_eq!(
            names(&index.triggers(&watcher::Event::Apply(a2), || store.clone())),
            ["a"]
        );

        // Deleting the holder wakes the other claimant of its id.
        let after: Vec<Arc<Tenant>> = store[1..].to_vec();
        assert_eq!(
            names(&index.triggers(&watcher::Event::Delete(a.clone()), || after.clone())),
            ["b"]
        );

        // c switches to "acme": c itself, and b (new claim); nobody else claims "other".
        let c2 = t("c", "ns", "externalId: acme\n");
        let after: Vec<Arc<Tenant>> = vec![Arc::new(b.clone()), Arc::new(c2.clone())];
        assert_eq!(
            names(&index.triggers(&watcher::Event::Apply(c2), || after.clone())),
            ["c", "b"]
        );

        // b leaves "acme" for another fleet: c (old claim) is woken.
        let b2 = t("b", "ns", "externalId: acme\nfleetRef: {name: other}\n");
        let after: Vec<Arc<Tenant>> = vec![
            Arc::new(b2.clone()),
            Arc::new(t("c", "ns", "externalId: acme\n")),
        ];
        assert_eq!(
            names(&index.triggers(&watcher::Event::Apply(b2), || after.clone())),
            ["b", "c"]
        );
    }

    #[test]
    fn fleets_pass_only_when_tenants_care() {
        let mut changes = FleetChanges::default();
        let f = fleet_with("edge", "db", "replicas: 2");
        assert!(
            changes
                .filter(watcher::Event::InitApply(f.clone()))
                .is_some()
        );
        assert!(
            changes.filter(watcher::Event::Apply(f.clone())).is_none(),
            "unchanged"
        );
        let mut other_status = f.clone();
        other_status.status = Some(pgfleet_crds::PoolerFleetStatus {
            selector: Some("x".into()),
            tenants: Some(4),
            ..Default::default()
        });
        assert!(
            changes
                .filter(watcher::Event::Apply(other_status.clone()))
                .is_none(),
            "selector and tenant count do not matter"
        );
        let mut scaled = other_status.clone();
        scaled.spec.replicas = 3;
        assert!(
            changes
                .filter(watcher::Event::Apply(scaled.clone()))
                .is_some()
        );
        let mut opened = scaled.clone();
        opened.spec.allowed_tenant_namespaces = vec!["team-a".into()];
        assert!(
            changes
                .filter(watcher::Event::Apply(opened.clone()))
                .is_some()
        );
        assert!(
            changes
                .filter(watcher::Event::Delete(opened.clone()))
                .is_some()
        );
        assert!(
            changes.filter(watcher::Event::Apply(opened)).is_some(),
            "back again"
        );
    }

    #[test]
    fn fleets_map_to_their_tenants() {
        let tenants: Vec<Arc<Tenant>> = vec![
            Arc::new(t("a", "db", "fleetRef: {name: edge}\n")),
            Arc::new(t("b", "team-a", "fleetRef: {name: edge, namespace: db}\n")),
            Arc::new(t("c", "team-a", "fleetRef: {name: edge}\n")),
            Arc::new(t("d", "db", "")),
        ];
        let f = fleet_with("edge", "db", "{}");
        assert_eq!(refs(&tenants_of_fleet(&tenants, &f)), ["db/a", "team-a/b"]);
        let f = fleet_with("default", "db", "{}");
        assert_eq!(refs(&tenants_of_fleet(&tenants, &f)), ["db/d"]);
    }

    #[test]
    fn secrets_map_to_referencing_tenants_and_document_owners() {
        let tenants: Vec<Arc<Tenant>> = vec![
            Arc::new(t("a", "team-a", "")),
            Arc::new(t("b", "team-b", "")),
            Arc::new(tenant(
                "c",
                "team-a",
                "upstream: {host: h, tls: {mode: verify-ca, caSecretRef: {name: ca, key: ca.crt}}}\nauthQuery: {userSecretRef: {name: auth}}\n",
            )),
        ];
        let meta = |ns: &str, name: &str| ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        };
        assert_eq!(
            refs(&tenants_for_secret(&tenants, &meta("team-a", "app-pw"))),
            ["team-a/a"]
        );
        assert_eq!(
            refs(&tenants_for_secret(&tenants, &meta("team-b", "app-pw"))),
            ["team-b/b"]
        );
        assert_eq!(
            refs(&tenants_for_secret(&tenants, &meta("team-a", "auth"))),
            ["team-a/c"]
        );
        assert_eq!(
            refs(&tenants_for_secret(&tenants, &meta("team-a", "ca"))),
            ["team-a/c"]
        );
        assert!(tenants_for_secret(&tenants, &meta("team-a", "unrelated")).is_empty());

        // A document in the fleet's namespace maps back to its Tenant (full name from the
        // annotation), whether or not the store knows it.
        let mut doc = meta("db", "pgfleet-tenant-team-a-a-0123");
        doc.labels = Some(BTreeMap::from([
            ("pgfleet.io/fleet".to_string(), "edge".to_string()),
            ("pgfleet.io/tenant".to_string(), "short-abc".to_string()),
            (
                "pgfleet.io/tenant-namespace".to_string(),
                "team-a".to_string(),
            ),
        ]));
        assert_eq!(
            refs(&tenants_for_secret(&tenants, &doc)),
            ["team-a/short-abc"]
        );
        doc.annotations = Some(BTreeMap::from([(
            "pgfleet.io/tenant".to_string(),
            "a".to_string(),
        )]));
        assert_eq!(refs(&tenants_for_secret(&tenants, &doc)), ["team-a/a"]);
    }
}
