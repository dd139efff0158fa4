//! Server-side apply as every controller of the operator does it, and the API handles the
//! controllers watch through.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::FIELD_MANAGER;

/// Server-side apply parameters for everything the operator writes: one field manager, and
/// conflicts forced (the operator's view of its own fields wins over manual edits).
pub(crate) fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side applies `obj` in `namespace` under [`FIELD_MANAGER`] and returns the object as
/// stored.
pub(crate) async fn server_side_apply<K>(
    client: &Client,
    namespace: &str,
    obj: &K,
) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(obj))
        .await
}

/// Server-side applies `status` as the status subresource of `obj` under [`FIELD_MANAGER`].
/// Only the fields in `status` are claimed, so other writers' status fields are left alone.
pub(crate) async fn server_side_apply_status<K>(
    client: &Client,
    obj: &K,
    status: &impl Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.name_any();
    let namespace = obj.namespace().unwrap_or_default();
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name, "namespace": namespace },
        "status": status,
    });
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch_status(&name, &apply_params(), &Patch::Apply(&body))
        .await?;
    Ok(())
}

/// An API handle on `K` in `namespace`, or in every namespace when `None`.
pub(crate) fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
