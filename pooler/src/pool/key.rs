//! What makes two clients share server connections.

use std::sync::Arc;

use pgfleet_crds::PoolMode;

/// Clients with equal keys share a pool: same tenant, role, database, mode and `search_path`
/// (a startup setting that cannot be changed per transaction without leaking).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Tenant external id.
    pub tenant: Arc<str>,
    /// Role.
    pub user: Arc<str>,
    /// Database.
    pub database: Arc<str>,
    /// Pool mode.
    pub mode: PoolMode,
    /// `search_path` from the client's options, if any.
    pub search_path: Option<Arc<str>>,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}/{} ({})",
            self.user,
            self.tenant,
            self.database,
            self.mode.as_str()
        )?;
        if let Some(sp) = &self.search_path {
            write!(f, " search_path={sp}")?;
        }
        Ok(())
    }
}
