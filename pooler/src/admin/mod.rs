//! The admin HTTP port: `/healthz`, `/readyz`, `/metrics` and `/status`.
//!
//! Kept off the client ports and off the hot path: everything it reports is read from the
//! pools and tenants at request time.

pub mod metrics;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// What readiness depends on besides the tenants being loaded.
#[derive(Default)]
pub struct Readiness {
    /// Both client ports accept connections.
    pub listening: AtomicBool,
    /// Shutdown began: stop sending new clients here.
    pub stopping: AtomicBool,
}

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The pooler's state.
    pub shared: Arc<Shared>,
    /// Readiness flags.
    pub readiness: Arc<Readiness>,
}

impl AdminState {
    /// Why the pooler is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.readiness.stopping.load(Ordering::Acquire) {
            Some("draining")
        } else if !self.readiness.listening.load(Ordering::Acquire) {
            Some("listeners not up")
        } else if !self.shared.tenants.is_synced() {
            Some("tenant source not synced")
        } else {
            None
        }
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .route("/status", get(status_handler))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.not_ready_reason() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics_handler(State(state): State<AdminState>) -> impl IntoResponse {
    match metrics::render(&state) {
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

async fn status_handler(State(state): State<AdminState>) -> impl IntoResponse {
    axum::Json(status::collect(&state))
}

/// Serves the admin port until `shutdown`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::warn!(error = %e, "admin server stopped");
    }
}
