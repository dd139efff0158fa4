//! One reconcile of one Tenant: the pipeline described in the [module documentation](super).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Client, ResourceExt as _};
use pgfleet_crds::tenant::CONDITION_READY;
use pgfleet_crds::{PoolerFleet, Tenant, TenantStatus};

use super::admission::{admit_namespace, check_external_id};
use super::events::{EVENT_DOCUMENT_DELETED, EVENT_RENDERED, Notice, publish, status_notices};
use super::resolve::{fetch_secrets, resolve};
use super::status::{
    Outcome, Rejection, condition, desired_status, endpoint, fleet_unavailable, status_changed,
};
use super::{Error, FINALIZER, RESYNC_INTERVAL, State};
use crate::apply::{server_side_apply, server_side_apply_status};
use crate::backoff::object_key;
use crate::resources::meta::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::resources::tenant_secret::LABEL_TENANT_NAMESPACE;
use crate::resources::{
    FleetKey, TENANT_DOCUMENT_KEY, render_tenant_document, tenant_document_secret,
    tenant_document_secret_name,
};

/// The replicas a fleet's budgets are split across: `max(spec.replicas, status.replicas, 1)`
/// (see the module documentation for why not the ready replicas).
pub fn budget_replicas(fleet: &PoolerFleet) -> u32 {
    let status = fleet.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    u32::try_from(fleet.spec.replicas.max(status).max(1)).unwrap_or(1)
}

/// Reconciles one Tenant under its finalizer.
pub async fn reconcile(tenant: Arc<Tenant>, state: Arc<State>) -> Result<Action, Error> {
    let namespace = tenant
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = tenant
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("name"))?;
    let tenants: Api<Tenant> = Api::namespaced(state.ctx.client.clone(), &namespace);
    let action = finalizer(&tenants, FINALIZER, tenant, |event| async {
        match event {
            FinalizerEvent::Apply(tenant) => apply(&tenant, &state).await,
            FinalizerEvent::Cleanup(tenant) => cleanup(&tenant, &state).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    state.ctx.backoff.succeeded(&object_key(&namespace, &name));
    Ok(action)
}

/// What the fleet, the other Tenants and the Secrets say about `tenant`: the fleet and the
/// document Secret to apply, or why not.
async fn evaluate(
    tenant: &Tenant,
    fleet_key: &FleetKey,
    state: &State,
) -> Result<Result<(PoolerFleet, Secret, u32), Rejection>, Error> {
    let client = &state.ctx.client;
    let namespace = tenant.namespace().unwrap_or_default();
    let fleets: Api<PoolerFleet> = Api::namespaced(client.clone(), &fleet_key.namespace);
    let fleet = fleets
        .get_opt(&fleet_key.name)
        .await
        .map_err(Error::kube(format!(
            "reading PoolerFleet {}/{}",
            fleet_key.namespace, fleet_key.name
        )))?;
    let Some(fleet) = fleet else {
        return Ok(Err(Rejection::FleetNotFound {
            fleet: fleet_key.clone(),
        }));
    };
    if let Err(rejection) = admit_namespace(&fleet, fleet_key, &namespace) {
        return Ok(Err(rejection));
    }
    let known = state.tenants.state();
    if let Err(rejection) = check_external_id(tenant, &fleet, known.iter().map(|t| t.as_ref())) {
        return Ok(Err(rejection));
    }
    let fetched = fetch_secrets(client, &namespace, &tenant.spec).await?;
    let resolved = match resolve(&namespace, &tenant.spec, &fetched) {
        Ok(resolved) => resolved,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let replicas = budget_replicas(&fleet);
    let document = match render_tenant_document(tenant, &resolved, replicas) {
        Ok(document) => document,
        Err(error) => {
            return Ok(Err(Rejection::InvalidSpec {
                message: error.to_string(),
            }));
        }
    };
    let secret = tenant_document_secret(tenant, &document).map_err(Error::Build)?;
    Ok(Ok((fleet, secret, replicas)))
}

/// The namespace of the fleet recorded in `status.fleet` (`<namespace>/<name>`): where a
/// previous reconcile may have left a document.
fn previous_fleet_namespace(status: Option<&TenantStatus>) -> Option<String> {
    let fleet = status?.fleet.as_deref()?;
    fleet.split_once('/').map(|(ns, _)| ns.to_string())
}

async fn apply(tenant: &Tenant, state: &State) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let namespace = tenant.namespace().unwrap_or_default();
    let name = tenant.name_any();
    let fleet_key = FleetKey::of(tenant).map_err(Error::Build)?;
    let document_name = tenant_document_secret_name(&namespace, &name);
    let previous =
        previous_fleet_namespace(tenant.status.as_ref()).filter(|ns| *ns != fleet_key.namespace);

    let mut notices = Vec::new();
    let outcome = match evaluate(tenant, &fleet_key, state).await? {
        Ok((fleet, secret, replicas)) => {
            if write_document(&ctx.client, &secret).await? {
                notices.push(Notice {
                    warning: false,
                    reason: EVENT_RENDERED.to_string(),
                    note: format!(
                        "tenant document Secret {}/{document_name} written for PoolerFleet {}/{} (budgets split across {replicas} replica(s))",
                        fleet_key.namespace, fleet_key.namespace, fleet_key.name
                    ),
                    action: "Render",
                    condition: None,
                });
            }
            if let Some(old) = &previous
                && delete_document(&ctx.client, old, &document_name, &namespace).await?
            {
                notices.push(deleted_notice(
                    old,
                    &document_name,
                    "the Tenant moved to another fleet",
                ));
            }
            let external_id = tenant.spec.effective_external_id(&name);
            Outcome::Rendered {
                endpoint: endpoint(
                    &fleet,
                    &fleet_key,
                    external_id,
                    &tenant.spec.upstream.database,
                ),
                replicas,
                unavailable: fleet_unavailable(&fleet),
            }
        }
        Err(rejection) => {
            tracing::info!(tenant = %object_key(&namespace, &name), reason = rejection.reason(), %rejection, "not accepted");
            for ns in std::iter::once(&fleet_key.namespace).chain(previous.as_ref()) {
                if delete_document(&ctx.client, ns, &document_name, &namespace).await? {
                    notices.push(deleted_notice(
                        ns,
                        &document_name,
                        "the Tenant is not accepted",
                    ));
                }
            }
            Outcome::Rejected(rejection)
        }
    };

    let desired = desired_status(
        tenant.status.as_ref(),
        tenant.metadata.generation,
        &fleet_key,
        &outcome,
        now(),
    );
    // Acceptance first, then what was done about the document.
    let mut all = status_notices(tenant.status.as_ref(), &desired);
    all.append(&mut notices);
    write_status(&ctx.client, tenant, &desired).await?;
    let uid = tenant.metadata.uid.as_deref().unwrap_or_default();
    if condition(Some(&desired), CONDITION_READY).is_some_and(|c| c.status == "True") {
        ctx.events.reset(uid, CONDITION_READY);
    }
    for notice in all {
        publish(&ctx.recorder, &ctx.events, tenant, notice).await;
    }

    Ok(match outcome {
        Outcome::Rejected(rejection) if rejection.needs_spec_change() => Action::await_change(),
        _ => Action::requeue(RESYNC_INTERVAL),
    })
}

async fn cleanup(tenant: &Tenant, state: &State) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let namespace = tenant.namespace().unwrap_or_default();
    let name = tenant.name_any();
    let fleet_key = FleetKey::of(tenant).map_err(Error::Build)?;
    let document_name = tenant_document_secret_name(&namespace, &name);
    let previous =
        previous_fleet_namespace(tenant.status.as_ref()).filter(|ns| *ns != fleet_key.namespace);
    for ns in std::iter::once(&fleet_key.namespace).chain(previous.as_ref()) {
        if delete_document(&ctx.client, ns, &document_name, &namespace).await? {
            publish(
                &ctx.recorder,
                &ctx.events,
                tenant,
                deleted_notice(ns, &document_name, "the Tenant is being deleted"),
            )
            .await;
        }
    }
    ctx.events
        .forget(tenant.metadata.uid.as_deref().unwrap_or_default());
    tracing::info!(tenant = %object_key(&namespace, &name), "document removed; releasing the finalizer");
    Ok(Action::await_change())
}

fn deleted_notice(namespace: &str, document: &str, why: &str) -> Notice {
    Notice {
        warning: false,
        reason: EVENT_DOCUMENT_DELETED.to_string(),
        note: format!("tenant document Secret {namespace}/{document} deleted: {why}"),
        action: "Delete",
        condition: None,
    }
}

/// Whether `existing` already says what `desired` says: same document, and every label and
/// annotation the controller sets.
fn document_current(existing: &Secret, desired: &Secret) -> bool {
    let subset = |want: &Option<std::collections::BTreeMap<String, String>>,
                  have: &Option<std::collections::BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let doc = |s: &Secret| {
        s.data
            .as_ref()
            .and_then(|d| d.get(TENANT_DOCUMENT_KEY))
            .map(|b| b.0.clone())
    };
    doc(existing).is_some()
        && doc(existing) == doc(desired)
        && subset(&desired.metadata.labels, &existing.metadata.labels)
        && subset(
            &desired.metadata.annotations,
            &existing.metadata.annotations,
        )
}

/// Applies the document Secret unless it is already current; true when something was written.
async fn write_document(client: &Client, secret: &Secret) -> Result<bool, Error> {
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.name_any();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading Secret {namespace}/{name}")))?;
    if existing.is_some_and(|e| document_current(&e, secret)) {
        return Ok(false);
    }
    server_side_apply(client, &namespace, secret)
        .await
        .map_err(Error::kube(format!(
            "server-side apply of Secret {namespace}/{name}"
        )))?;
    tracing::info!(document = %object_key(&namespace, &name), "tenant document written");
    Ok(true)
}

/// Deletes the document `namespace/name` of the Tenant in `tenant_namespace`, if it exists and
/// is one the operator wrote for that namespace (a Secret someone else made under that name is
/// left alone). True when something was deleted.
async fn delete_document(
    client: &Client,
    namespace: &str,
    name: &str,
    tenant_namespace: &str,
) -> Result<bool, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading Secret {namespace}/{name}")))?
    else {
        return Ok(false);
    };
    let labels = existing.labels();
    let ours = labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
        && labels.get(LABEL_TENANT_NAMESPACE).map(String::as_str) == Some(tenant_namespace);
    if !ours {
        tracing::warn!(secret = %object_key(namespace, name), "not a tenant document of this Tenant; left alone");
        return Ok(false);
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(document = %object_key(namespace, name), "tenant document deleted");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(source) => Err(Error::Kube {
            action: format!("deleting Secret {namespace}/{name}"),
            source,
        }),
    }
}

/// Server-side applies `desired` as the Tenant's status, when it changed.
async fn write_status(
    client: &Client,
    tenant: &Tenant,
    desired: &TenantStatus,
) -> Result<(), Error> {
    if !status_changed(tenant.status.as_ref(), desired) {
        return Ok(());
    }
    let (name, namespace) = (tenant.name_any(), tenant.namespace().unwrap_or_default());
    server_side_apply_status(client, tenant, desired)
        .await
        .map_err(Error::kube(format!(
            "writing the status of Tenant {namespace}/{name}"
        )))?;
    Ok(())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::fleet_with;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use pgfleet_crds::PoolerFleetStatus;
    use std::collections::BTreeMap;

    #[test]
    fn budgets_split_across_desired_or_existing_replicas_whichever_is_more() {
        let mut f = fleet_with("edge", "db", "replicas: 2");
        assert_eq!(budget_replicas(&f), 2, "no status yet: the desired count");
        f.status = Some(PoolerFleetStatus {
            replicas: Some(3),
            ready_replicas: Some(1),
            ..PoolerFleetStatus::default()
        });
        assert_eq!(budget_replicas(&f), 3, "scaling down: old pods still run");
        f.spec.replicas = 5;
        assert_eq!(budget_replicas(&f), 5, "scaling up: count the pods to come");
        f.spec.replicas = 0;
        f.status = None;
        assert_eq!(budget_replicas(&f), 1, "never below one");
    }

    #[test]
    fn the_previous_fleet_namespace_comes_from_status() {
        assert_eq!(previous_fleet_namespace(None), None);
        let status = TenantStatus {
            fleet: Some("db/edge".into()),
            ..TenantStatus::default()
        };
        assert_eq!(
            previous_fleet_namespace(Some(&status)).as_deref(),
            Some("db")
        );
    }

    #[test]
    fn a_document_is_current_when_data_labels_and_annotations_match() {
        let secret = |doc: &str, labels: &[(&str, &str)]| Secret {
            metadata: ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                annotations: Some(BTreeMap::from([("a".to_string(), "1".to_string())])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                TENANT_DOCUMENT_KEY.to_string(),
                ByteString(doc.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        let desired = secret("x: 1", &[("pgfleet.io/fleet", "edge")]);
        let mut existing = secret("x: 1", &[("pgfleet.io/fleet", "edge"), ("extra", "kept")]);
        assert!(
            document_current(&existing, &desired),
            "extra labels do not matter"
        );
        assert!(!document_current(
            &secret("x: 2", &[("pgfleet.io/fleet", "edge")]),
            &desired
        ));
        assert!(!document_current(
            &secret("x: 1", &[("pgfleet.io/fleet", "other")]),
            &desired
        ));
        existing.metadata.annotations = None;
        assert!(!document_current(&existing, &desired));
        existing.metadata.annotations = desired.metadata.annotations.clone();
        existing.data = None;
        assert!(!document_current(&existing, &desired));
    }
}
