//! Desired state: pure builders from pgfleet's custom resources to Kubernetes objects.
//!
//! Nothing here talks to the API server. Each builder takes the custom resource (plus whatever
//! the controller resolved for it, such as Secret contents or the operator's default image)
//! and returns the complete object to server-side apply under [`crate::FIELD_MANAGER`]. Keeping
//! them pure makes the interesting decisions (names, labels, what rolls pods, how budgets are
//! split) testable in microseconds.
//!
//! Children of a `PoolerFleet` (one file per kind):
//!
//! | kind | name | file |
//! | --- | --- | --- |
//! | ServiceAccount | `<fleet>-pooler` | [`mod@service_account`] |
//! | Role | `<fleet>-pooler` | [`mod@role`] |
//! | RoleBinding | `<fleet>-pooler` | [`mod@role_binding`] |
//! | Deployment | `<fleet>` | [`mod@deployment`] |
//! | Service | `<fleet>` | [`mod@service`] |
//! | PodDisruptionBudget | `<fleet>` (only with more than one replica) | [`mod@pod_disruption_budget`] |
//!
//! All of them carry the fleet's labels ([`meta::fleet_labels`]) and a controller owner
//! reference to the fleet, so deleting the fleet garbage-collects them.
//!
//! Per `Tenant`: the tenant document ([`tenant_document::render_tenant_document`]) and the
//! Secret carrying it ([`tenant_secret::tenant_document_secret`]).

pub mod deployment;
pub mod error;
pub mod meta;
pub mod pod_disruption_budget;
pub mod role;
pub mod role_binding;
pub mod service;
pub mod service_account;
pub mod tenant_document;
pub mod tenant_secret;

#[cfg(test)]
pub(crate) mod test_support;

pub use deployment::{CONFIG_HASH_ANNOTATION, TLS_MOUNT_PATH, config_hash, deployment};
pub use error::{BuildError, RenderError};
pub use meta::{FleetIdentity, fleet_labels, selector_labels, selector_string};
pub use pod_disruption_budget::pod_disruption_budget;
pub use role::role;
pub use role_binding::role_binding;
pub use service::service;
pub use service_account::service_account;
pub use tenant_document::{AuthUserCredentials, ResolvedSecrets, render_tenant_document};
pub use tenant_secret::{
    FleetKey, TENANT_DOCUMENT_KEY, tenant_document_secret, tenant_document_secret_name,
    tenant_documents_selector,
};
