//! pgfleet's resource types.
//!
//! The tenant document is the contract between the operator and the pooler: the operator
//! renders one per `Tenant` (secrets resolved, sizes split per replica) and the pooler loads it
//! from a directory or from a Secret. Keeping the type here lets both sides share one schema and
//! one validation.

pub mod document;
pub mod duration;
pub mod validate;

pub use document::{AuthQuery, PoolMode, TenantDocument, Upstream, UserDocument};
pub use validate::{DocumentError, ValidationError};
