//! The admin HTTP server: `/healthz`, `/readyz` and `/metrics`.
//!
//! - `/healthz` is 200 for as long as the process serves HTTP (liveness).
//! - `/readyz` is 200 once the Kubernetes API answered and this replica knows its role: the
//!   leader once its controllers run, a standby while it waits for the Lease (it is healthy and
//!   ready to take over). 503 with the reason otherwise, and from the start of a shutdown.
//! - `/metrics` is OpenMetrics text (see [`crate::metrics`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Where this replica is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Connecting to the API server, or competing for the Lease for the first time.
    Starting = 0,
    /// Another replica leads; this one waits to take over.
    Standby = 1,
    /// This replica leads (or runs without leader election) and its controllers run.
    Leader = 2,
    /// Shutting down.
    Stopping = 3,
}

impl Role {
    fn from_u8(value: u8) -> Role {
        match value {
            1 => Role::Standby,
            2 => Role::Leader,
            3 => Role::Stopping,
            _ => Role::Starting,
        }
    }
}

/// What `/readyz` reports; shared between the admin server and the operator's main loop.
#[derive(Debug, Default)]
pub struct Health {
    api_reachable: AtomicBool,
    role: AtomicU8,
}

impl Health {
    /// Records that the Kubernetes API answered.
    pub fn set_api_reachable(&self) {
        self.api_reachable.store(true, Ordering::Release);
    }

    /// Records the replica's role.
    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Release);
    }

    /// The replica's role.
    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Acquire))
    }

    /// `Ok(what this replica is)` when ready, `Err(why not)` otherwise.
    pub fn readiness(&self) -> Result<&'static str, &'static str> {
        match self.role() {
            Role::Stopping => Err("shutting down"),
            _ if !self.api_reachable.load(Ordering::Acquire) => {
                Err("the Kubernetes API has not answered yet")
            }
            Role::Starting => Err("starting"),
            Role::Standby => Ok("standby"),
            Role::Leader => Ok("leader"),
        }
    }
}

/// Shared state of the admin handlers.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// Readiness.
    pub health: Arc<Health>,
    /// The metrics `/metrics` renders.
    pub metrics: Metrics,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(role) => (StatusCode::OK, format!("ready: {role}\n")),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics_handler(State(state): State<AdminState>) -> impl IntoResponse {
    match state.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "metrics encoding failed\n".to_string(),
        ),
    }
}

/// Binds the admin address; returns the listener and the address it got (the port is chosen
/// by the system when `addr` has port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves the admin routes on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    if let Err(error) = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::warn!(%error, "admin server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_role() {
        let health = Health::default();
        assert!(health.readiness().is_err());
        health.set_role(Role::Standby);
        assert_eq!(
            health.readiness(),
            Err("the Kubernetes API has not answered yet")
        );
        health.set_api_reachable();
        assert_eq!(health.readiness(), Ok("standby"));
        health.set_role(Role::Leader);
        assert_eq!(health.readiness(), Ok("leader"));
        health.set_role(Role::Stopping);
        assert_eq!(health.readiness(), Err("shutting down"));
    }
}
