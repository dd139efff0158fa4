//! Authentication: SCRAM and MD5 primitives, and secrets fetched with a tenant's auth query.

pub mod auth_query;
pub mod md5;
pub mod scram;
