//! Tenants: the loaded documents, their derived secrets, and the sources that feed reloads.
//!
//! Two sources feed the same reload path ([`TenantRegistry::apply`]): a directory of files
//! ([`directory`]) and the fleet's tenant-document Secrets in Kubernetes ([`kubernetes`]).

pub mod directory;
pub mod kubernetes;
pub mod registry;
pub mod tenant;

pub use registry::TenantRegistry;
pub use tenant::{Tenant, TenantRuntime};
