//! The operator's metrics, served on `/metrics` as OpenMetrics text with the prefix
//! `pgfleet_operator_`:
//!
//! | series | type | labels |
//! | --- | --- | --- |
//! | `pgfleet_operator_reconciles_total` | counter | `controller`, `result` (`success`, `error`) |
//! | `pgfleet_operator_reconcile_errors_total` | counter | `controller`, `kind` (`reconcile`, `watch`, `object_not_found`, `runner`) |
//! | `pgfleet_operator_reconcile_duration_seconds` | histogram | `controller` |
//! | `pgfleet_operator_leader` | gauge | none: 1 while this replica leads (or runs without leader election) |
//! | `pgfleet_operator_leader_transitions_total` | counter | none: times this replica acquired the Lease |
//!
//! `reconciles_total` and the duration count each call of a reconcile function;
//! `reconcile_errors_total` counts every error the controller's stream reports, failed
//! reconciles (`kind="reconcile"`) and watch failures (`kind="watch"`) alike. Labels are
//! bounded: a controller name and a fixed set of values, never an object name.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the reconcile duration buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Labels of `reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// The controller (`fleet`, `tenant`).
    pub controller: &'static str,
    /// `success` or `error`.
    pub result: &'static str,
}

/// Labels of `reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller.
    pub controller: &'static str,
    /// What failed: `reconcile`, `watch`, `object_not_found` or `runner`.
    pub kind: &'static str,
}

/// Labels of the duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The controller.
    pub controller: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The operator's metrics; cheap to clone (every clone updates the same series).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    leader: Gauge,
    leader_transitions: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("leader", &self.leader.get())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh series, registered under the `pgfleet_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pgfleet_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let leader = Gauge::default();
        let leader_transitions = Counter::default();
        registry.register(
            "reconciles",
            "Reconciles run, by controller and result.",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Errors reported by a controller: failed reconciles and watch failures.",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took.",
            durations.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader and runs the controllers, else 0.",
            leader.clone(),
        );
        registry.register(
            "leader_transitions",
            "Times this replica acquired the leader Lease.",
            leader_transitions.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            errors,
            durations,
            leader,
            leader_transitions,
        }
    }

    /// Records one reconcile of `controller` that took `elapsed`.
    pub fn reconciled(&self, controller: &'static str, elapsed: Duration, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        self.durations
            .get_or_create(&ControllerLabels { controller })
            .observe(elapsed.as_secs_f64());
    }

    /// Records an error the controller's stream reported.
    pub fn controller_error(&self, controller: &'static str, kind: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { controller, kind })
            .inc();
    }

    /// Sets the `leader` gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Counts one acquisition of the Lease.
    pub fn became_leader(&self) {
        self.leader_transitions.inc();
    }

    /// Reconciles of `controller` with `result` so far (for tests and logs).
    pub fn reconciles(&self, controller: &'static str, result: &'static str) -> u64 {
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .get()
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_the_prefix() {
        let metrics = Metrics::new();
        metrics.reconciled("fleet", Duration::from_millis(30), true);
        metrics.reconciled("fleet", Duration::from_millis(30), false);
        metrics.controller_error("fleet", "watch");
        metrics.set_leader(true);
        metrics.became_leader();
        let text = metrics.render().expect("encodes");
        for line in [
            "pgfleet_operator_reconciles_total{controller=\"fleet\",result=\"success\"} 1",
            "pgfleet_operator_reconciles_total{controller=\"fleet\",result=\"error\"} 1",
            "pgfleet_operator_reconcile_errors_total{controller=\"fleet\",kind=\"watch\"} 1",
            "pgfleet_operator_reconcile_duration_seconds_count{controller=\"fleet\"} 2",
            "pgfleet_operator_reconcile_duration_seconds_bucket{le=\"0.05\",controller=\"fleet\"} 2",
            "pgfleet_operator_leader 1",
            "pgfleet_operator_leader_transitions_total 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert_eq!(metrics.reconciles("fleet", "success"), 1);
        metrics.set_leader(false);
        assert!(
            metrics
                .render()
                .expect("encodes")
                .contains("pgfleet_operator_leader 0")
        );
    }
}
