//! Liveness and readiness for the load balancer.

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

/// The process is up and serving HTTP.
pub(super) async fn live() -> &'static str {
    "ok"
}

/// Ready for new work: 503 once draining, so the balancer stops sending requests.
pub(super) async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "ready")
    }
}
