//! The operator port: Prometheus metrics and health probes over plain HTTP, meant for the operations network
//! only (bind it to loopback or a management interface, never to the hospital-facing one).

use crate::metrics::Metrics;
use crate::spool::Spool;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared state of the operator endpoints.
#[derive(Clone)]
pub struct OperatorState {
    /// Gateway metrics.
    pub metrics: Arc<Metrics>,
    /// False once the gateway begins shutting down.
    pub ready: Arc<AtomicBool>,
    /// The spool: not ready once its writer failed.
    pub spool: Spool,
}

async fn metrics(State(s): State<OperatorState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<OperatorState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) && s.spool.is_healthy() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The operator router.
pub fn router(state: OperatorState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}
