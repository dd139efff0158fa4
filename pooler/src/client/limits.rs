//! Client caps: per tenant, per user, and per session pool. Slots are RAII guards so every
//! exit path, including a panic-free early return, gives them back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::errors::ClientError;
use crate::pool::Pool;
use crate::tenants::{Tenant, TenantRuntime};

/// A client counted against its tenant's and user's caps.
pub struct ClientSlot {
    runtime: Arc<TenantRuntime>,
    user: String,
}

impl ClientSlot {
    /// Counts a client in, or refuses it with `EMAXCONN` when the tenant (defaultMaxClients)
    /// or the user (maxClients) is full.
    pub fn acquire(tenant: &Tenant, user: &str) -> Result<ClientSlot, ClientError> {
        let tenant_cap = tenant.doc.default_max_clients;
        let user_cap = tenant.max_clients_for(user);
        let runtime = Arc::clone(&tenant.runtime);
        if runtime.clients.fetch_add(1, Ordering::AcqRel) >= tenant_cap {
            runtime.clients.fetch_sub(1, Ordering::AcqRel);
            return Err(ClientError::MaxClients(tenant_cap));
        }
        let mut users = runtime.user_clients.lock();
        let count = users.entry(user.to_string()).or_insert(0);
        if *count >= user_cap {
            drop(users);
            runtime.clients.fetch_sub(1, Ordering::AcqRel);
            return Err(ClientError::MaxClients(user_cap));
        }
        *count += 1;
        drop(users);
        Ok(ClientSlot {
            runtime,
            user: user.to_string(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.runtime.clients.fetch_sub(1, Ordering::AcqRel);
        let mut users = self.runtime.user_clients.lock();
        if let Some(count) = users.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                users.remove(&self.user);
            }
        }
    }
}

/// A client attached to a pool; detaches on drop (a retired pool closes when the last leaves).
pub struct PoolAttachment {
    /// The pool.
    pub pool: Arc<Pool>,
    /// Clients attached when this one arrived, itself included.
    pub count: u32,
}

impl PoolAttachment {
    /// Attaches to `pool`.
    pub fn new(pool: Arc<Pool>) -> Self {
        let count = pool.attach();
        PoolAttachment { pool, count }
    }
}

impl Drop for PoolAttachment {
    fn drop(&mut self) {
        self.pool.detach();
    }
}

impl std::ops::Deref for PoolAttachment {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.pool
    }
}
