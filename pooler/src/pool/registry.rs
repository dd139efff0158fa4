//! All live pools, so reloads can find the pools of a tenant.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Pool, PoolConfig, PoolKey};

/// The pools of this process.
#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// The pool for `key`, created with `config()` if there is none.
    pub fn get_or_create(&self, key: &PoolKey, config: impl FnOnce() -> PoolConfig) -> Arc<Pool> {
        let mut map = self.map.lock();
        if let Some(pool) = map.get(key) {
            return Arc::clone(pool);
        }
        let pool = Arc::new(Pool::new(key.clone(), config()));
        map.insert(key.clone(), Arc::clone(&pool));
        pool
    }

    /// The pools of one tenant.
    pub fn of_tenant(&self, tenant: &str) -> Vec<Arc<Pool>> {
        self.map
            .lock()
            .values()
            .filter(|p| &*p.key.tenant == tenant)
            .cloned()
            .collect()
    }

    /// Removes a pool from the registry and retires it: new clients get a fresh pool, the old
    /// one closes its connections as its clients release them.
    pub fn retire(&self, key: &PoolKey) {
        let removed = self.map.lock().remove(key);
        if let Some(pool) = removed {
            pool.retire();
        }
    }

    /// Every pool (for status and tests).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map.lock().values().cloned().collect()
    }
}
