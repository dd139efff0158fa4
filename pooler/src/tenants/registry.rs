//! The set of loaded tenants, swapped atomically on reload, and the reload diff.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pgfleet_crds::{PoolMode, TenantDocument};

use super::tenant::{Tenant, TenantRuntime, revision_of};
use crate::pool::Pools;

/// What a reload did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Tenants new in this load.
    pub added: Vec<String>,
    /// Tenants whose document changed.
    pub changed: Vec<String>,
    /// Tenants no longer present.
    pub removed: Vec<String>,
    /// Tenants unchanged.
    pub unchanged: usize,
}

/// Loaded tenants. Readers take a snapshot without locking; a reload swaps in a new map.
#[derive(Default)]
pub struct TenantRegistry {
    current: ArcSwap<HashMap<String, Arc<Tenant>>>,
    runtimes: Mutex<HashMap<String, Arc<TenantRuntime>>>,
    reload_lock: tokio::sync::Mutex<()>,
    synced: AtomicBool,
    reloads: AtomicU64,
}

impl TenantRegistry {
    /// The tenant with this external id.
    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.current.load().get(id).cloned()
    }

    /// All loaded tenants.
    pub fn snapshot(&self) -> Arc<HashMap<String, Arc<Tenant>>> {
        self.current.load_full()
    }

    /// Loads applied so far (status, and tests that wait for a reload).
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Acquire)
    }

    /// True once the first load finished.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Replaces the tenant set with `docs`, touching only what changed: unchanged tenants keep
    /// their pools and connections; changed ones reconfigure their pools in place; removed
    /// ones stop taking new clients and close as their clients leave.
    pub async fn apply(&self, docs: Vec<TenantDocument>, pools: &Pools) -> ReloadSummary {
        let _serial = self.reload_lock.lock().await;
        let old = self.current.load_full();
        let mut summary = ReloadSummary::default();
        let mut next = HashMap::with_capacity(docs.len());
        let mut to_build = Vec::new();
        for doc in docs {
            let id = doc.external_id.clone();
            match old.get(&id) {
                Some(t) if t.revision == revision_of(&doc) => {
                    summary.unchanged += 1;
                    next.insert(id, Arc::clone(t));
                }
                previous => {
                    let runtime = Arc::clone(self.runtimes.lock().entry(id.clone()).or_default());
                    to_build.push((doc, previous.cloned(), runtime));
                }
            }
        }
        // PBKDF2 for new passwords runs here, off the async workers.
        let built = tokio::task::spawn_blocking(move || {
            to_build
                .into_iter()
                .map(|(doc, prev, rt)| (prev.is_some(), Tenant::build(doc, prev.as_deref(), rt)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut changed = Vec::new();
        for (existed, tenant) in built {
            let id = tenant.id.to_string();
            if existed {
                summary.changed.push(id.clone());
                changed.push(id.clone());
            } else {
                summary.added.push(id.clone());
            }
            next.insert(id, Arc::new(tenant));
        }
        for id in old.keys().filter(|id| !next.contains_key(*id)) {
            summary.removed.push(id.clone());
        }
        let next = Arc::new(next);
        self.current.store(Arc::clone(&next));
        {
            let mut runtimes = self.runtimes.lock();
            for id in &summary.removed {
                runtimes.remove(id);
            }
        }
        for id in &changed {
            let Some(tenant) = next.get(id) else { continue };
            // Clients that named no database went to the old default one: when the default
            // moves, its pools drain and close instead of holding the old database open.
            let old_default = old.get(id).map(|t| t.doc.upstream.database.as_str());
            for pool in pools.of_tenant(id) {
                let user = &*pool.key.user;
                let wrong_mode = pool.key.mode == PoolMode::Transaction
                    && tenant.mode_for(user) == PoolMode::Session;
                let default_moved = old_default
                    .is_some_and(|d| d != tenant.doc.upstream.database && *pool.key.database == *d);
                match tenant.pool_config(user) {
                    Some(config) if !wrong_mode && !default_moved => pool.reconfigure(config),
                    _ => pools.retire(&pool.key),
                }
            }
        }
        for id in &summary.removed {
            for pool in pools.of_tenant(id) {
                pools.retire(&pool.key);
            }
        }
        self.synced.store(true, Ordering::Release);
        self.reloads.fetch_add(1, Ordering::AcqRel);
        summary.added.sort();
        summary.changed.sort();
        summary.removed.sort();
        summary
    }
}
