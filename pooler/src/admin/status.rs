//! `/status`: tenants and pools as JSON, for people and scripts.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::AdminState;

/// The whole status document.
#[derive(Serialize)]
pub struct Status {
    /// Ready to take clients.
    pub ready: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready_reason: Option<&'static str>,
    /// Shutting down.
    pub draining: bool,
    /// Tenant loads applied.
    pub reloads: u64,
    /// Loaded tenants.
    pub tenants: Vec<TenantStatus>,
    /// Live pools.
    pub pools: Vec<PoolStatus>,
}

/// One tenant.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// External id.
    pub external_id: String,
    /// Content hash of its document, as hex.
    pub revision: String,
    /// Pool mode on the pooled port.
    pub mode: &'static str,
    /// Connected clients.
    pub clients: u32,
}

/// One pool.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Tenant external id.
    pub tenant: String,
    /// Role.
    pub user: String,
    /// Database.
    pub database: String,
    /// Pool mode.
    pub mode: &'static str,
    /// `search_path` in the key, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_path: Option<String>,
    /// Configured size.
    pub size: u32,
    /// Server connections open or opening.
    pub servers: u32,
    /// Of which idle.
    pub idle: usize,
    /// Clients waiting for a server.
    pub waiting: usize,
    /// Clients attached.
    pub clients: u32,
    /// Transactions (or sessions) served.
    pub checkouts: u64,
    /// No longer handed to new clients.
    pub retired: bool,
}

/// Reads the current status.
pub fn collect(state: &AdminState) -> Status {
    let shared = &state.shared;
    let mut tenants: Vec<TenantStatus> = shared
        .tenants
        .snapshot()
        .values()
        .map(|t| TenantStatus {
            external_id: t.id.to_string(),
            revision: format!("{:016x}", t.revision),
            mode: t.doc.mode.as_str(),
            clients: t.runtime.clients.load(Ordering::Relaxed),
        })
        .collect();
    tenants.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    let mut pools: Vec<PoolStatus> = shared
        .pools
        .all()
        .iter()
        .map(|p| {
            let (servers, idle, waiting) = p.counts();
            PoolStatus {
                tenant: p.key.tenant.to_string(),
                user: p.key.user.to_string(),
                database: p.key.database.to_string(),
                mode: p.key.mode.as_str(),
                search_path: p.key.search_path.as_deref().map(str::to_string),
                size: p.config().size,
                servers,
                idle,
                waiting,
                clients: p.clients.load(Ordering::Relaxed),
                checkouts: p.checkouts.load(Ordering::Relaxed),
                retired: p.is_retired(),
            }
        })
        .collect();
    pools.sort_by(|a, b| (&a.tenant, &a.user, &a.database).cmp(&(&b.tenant, &b.user, &b.database)));
    let reason = state.not_ready_reason();
    Status {
        ready: reason.is_none(),
        not_ready_reason: reason,
        draining: shared.is_draining(),
        reloads: shared.tenants.reloads(),
        tenants,
        pools,
    }
}
