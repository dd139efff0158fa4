//! pgfleet's Kubernetes operator.
//!
//! The operator is the only component that reads `Tenant` objects and their users' Secrets. For
//! each `PoolerFleet` it keeps a ServiceAccount, a Role and RoleBinding, a Deployment of poolers,
//! a Service and (with more than one replica) a PodDisruptionBudget; for each `Tenant` it
//! renders one tenant document (secrets resolved, budgets split per replica) into a Secret in
//! the fleet's namespace, which the fleet's poolers watch and hot-reload.
//!
//! The reconcile loop is a small pipeline (fetch → validate → build → apply → status). The
//! "build" step is [`resources`]: pure functions from custom resources to the Kubernetes objects
//! the operator applies, unit-tested without an API server. [`fleet_controller`] runs the whole
//! pipeline for `PoolerFleet`s, [`tenant_controller`] for `Tenant`s.
//!
//! The `pgfleet-operator` binary is [`cli::main`] (logging, runtime) around [`app::run`]:
//! flags in [`config`], leader election on a Lease in [`leader_election`] (only the leader runs
//! the controllers), `/healthz`, `/readyz` and `/metrics` in [`admin`] and [`metrics`].

pub mod admin;
pub mod app;
mod apply;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod events;
pub mod fleet_controller;
pub mod fleet_events;
pub mod leader_election;
pub mod metrics;
pub mod resources;
pub mod tenant_controller;

pub use fleet_controller::{
    Context, Error, error_policy, reconcile_fleet, run_fleet_controller, run_fleet_controller_in,
};

/// The server-side apply field manager for every object the operator writes.
///
/// One manager for children and status alike: server-side apply removes fields a manager owned
/// but left out of its next apply, so a stable name is what lets a field dropped from a builder
/// disappear from the cluster too.
pub const FIELD_MANAGER: &str = "pgfleet-operator";
