//! Tenants: the loaded documents, their derived secrets, and the sources that feed reloads.

pub mod directory;
pub mod registry;
pub mod tenant;

pub use registry::TenantRegistry;
pub use tenant::{Tenant, TenantRuntime};
