//! `/metrics`: Prometheus (OpenMetrics) text, prefix `pgfleet_`.
//!
//! Series are per tenant only (plus the error code for errors): never per user, database,
//! client address or tenant name a client typed, so cardinality stays bounded by the number
//! of tenants the operator configured. Values are read at scrape time.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::AdminState;

/// Per-tenant sums over its pools.
#[derive(Default)]
struct TenantTotals {
    clients: i64,
    active_servers: i64,
    idle_servers: i64,
    waiting: i64,
    transactions: u64,
    waits: u64,
    wait_seconds: f64,
    bytes_received: u64,
    bytes_sent: u64,
}

#[derive(Debug)]
struct PoolerCollector {
    state: AdminStateHandle,
}

/// `AdminState` is not `Debug`; the collector only needs a handle that is.
#[derive(Clone)]
struct AdminStateHandle(AdminState);

impl std::fmt::Debug for AdminStateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminState")
    }
}

/// Renders the metrics as OpenMetrics text.
pub fn render(state: &AdminState) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(PoolerCollector {
        state: AdminStateHandle(state.clone()),
    }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (String, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (tenant, value) in values {
        let labels = [("tenant", tenant)];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter_family<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (String, N)>,
) -> Result<(), std::fmt::Error>
where
    ConstCounter<N>: EncodeMetric,
{
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (tenant, value) in values {
        let labels = [("tenant", tenant)];
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for PoolerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = &self.state.0.shared;
        let tenants = shared.tenants.snapshot();
        let mut totals: BTreeMap<String, TenantTotals> = tenants
            .values()
            .map(|t| {
                let totals = TenantTotals {
                    clients: i64::from(t.runtime.clients.load(Ordering::Relaxed)),
                    ..TenantTotals::default()
                };
                (t.id.to_string(), totals)
            })
            .collect();
        for pool in shared.pools.all() {
            // Pools of a removed tenant still draining keep reporting under its name.
            let t = totals.entry(pool.key.tenant.to_string()).or_default();
            let (servers, idle, waiting) = pool.counts();
            t.idle_servers += idle as i64;
            t.active_servers += i64::from(servers) - idle as i64;
            t.waiting += waiting as i64;
            t.transactions += pool.checkouts.load(Ordering::Relaxed);
            t.waits += pool.stats.waits.load(Ordering::Relaxed);
            t.wait_seconds += pool.stats.wait_micros.load(Ordering::Relaxed) as f64 / 1e6;
            t.bytes_received += pool.stats.bytes_from_clients.load(Ordering::Relaxed);
            t.bytes_sent += pool.stats.bytes_to_clients.load(Ordering::Relaxed);
        }
        let each = |f: fn(&TenantTotals) -> i64| totals.iter().map(move |(k, v)| (k.clone(), f(v)));
        let each_u =
            |f: fn(&TenantTotals) -> u64| totals.iter().map(move |(k, v)| (k.clone(), f(v)));

        let tenants_gauge = encoder.encode_descriptor(
            "pgfleet_tenants",
            "Tenants loaded.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(tenants.len() as i64).encode(tenants_gauge)?;
        let draining = encoder.encode_descriptor(
            "pgfleet_draining",
            "1 while the pooler drains for shutdown.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(shared.is_draining())).encode(draining)?;

        gauge_family(
            &mut encoder,
            "pgfleet_clients",
            "Client connections logged in or logging in.",
            each(|t| t.clients),
        )?;
        gauge_family(
            &mut encoder,
            "pgfleet_servers_active",
            "Server connections held by a client (or opening).",
            each(|t| t.active_servers),
        )?;
        gauge_family(
            &mut encoder,
            "pgfleet_servers_idle",
            "Server connections idle in a pool.",
            each(|t| t.idle_servers),
        )?;
        gauge_family(
            &mut encoder,
            "pgfleet_clients_waiting",
            "Clients waiting for a server connection.",
            each(|t| t.waiting),
        )?;
        counter_family(
            &mut encoder,
            "pgfleet_transactions",
            "Transactions (transaction mode) and sessions (session mode) served.",
            each_u(|t| t.transactions),
        )?;
        counter_family(
            &mut encoder,
            "pgfleet_client_waits",
            "Checkouts that waited for a server connection.",
            each_u(|t| t.waits),
        )?;
        counter_family(
            &mut encoder,
            "pgfleet_client_wait_seconds",
            "Time clients spent waiting for a server connection.",
            totals.iter().map(|(k, v)| (k.clone(), v.wait_seconds)),
        )?;
        counter_family(
            &mut encoder,
            "pgfleet_client_bytes_received",
            "Bytes received from clients and forwarded to servers.",
            each_u(|t| t.bytes_received),
        )?;
        counter_family(
            &mut encoder,
            "pgfleet_client_bytes_sent",
            "Bytes sent to clients from servers.",
            each_u(|t| t.bytes_sent),
        )?;

        let mut errors = encoder.encode_descriptor(
            "pgfleet_errors",
            "Errors sent to clients, by stable code (see the README's catalogue).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (tenant, code, count) in shared.errors.snapshot() {
            let labels = [("tenant", tenant.to_string()), ("code", code.to_string())];
            ConstCounter::new(count).encode(errors.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
