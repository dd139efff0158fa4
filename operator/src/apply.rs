//! Server-side apply as every controller of the operator does it.

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
