//! Server connection pools keyed by (tenant, user, database, mode, search_path).

pub mod handoff;
pub mod key;
pub mod registry;
pub mod server_pool;

pub use handoff::Prelude;
pub use key::PoolKey;
pub use registry::Pools;
pub use server_pool::{Pool, PoolConfig, PoolStats};
