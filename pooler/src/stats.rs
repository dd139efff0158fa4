//! Process-wide counters that are not per pool.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Errors sent to clients, by tenant and stable code. Only tenants that exist are used as
/// labels (unknown ones count under an empty tenant), so a client typing random tenant names
/// cannot grow the metrics without bound.
#[derive(Default)]
pub struct ErrorCounts(Mutex<HashMap<(Arc<str>, &'static str), u64>>);

impl ErrorCounts {
    /// Counts one error.
    pub fn record(&self, tenant: Option<&Arc<str>>, code: &'static str) {
        let tenant = tenant.cloned().unwrap_or_else(|| Arc::from(""));
        *self.0.lock().entry((tenant, code)).or_insert(0) += 1;
    }

    /// All counts, sorted for stable output.
    pub fn snapshot(&self) -> Vec<(Arc<str>, &'static str, u64)> {
        let mut all: Vec<_> = self
            .0
            .lock()
            .iter()
            .map(|((t, c), n)| (Arc::clone(t), *c, *n))
            .collect();
        all.sort();
        all
    }
}
