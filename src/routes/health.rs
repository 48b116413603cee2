//! Liveness and readiness for the load balancer.

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

/// The process is up and serving HTTP.
pub(super) async fn live() -> &'static str {
    "ok"
}

/// Ready for new work: 503 once draining, so the balancer stops sending requests, and at start
/// until the replica listens for BFL webhooks other replicas pass on. A replica whose Redis does
/// not answer still serves (on its degraded share of slots) and says so.
pub(super) async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if state.webhook_forwarder.as_ref().is_some_and(|f| !f.started()) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if state.is_degraded() {
        (StatusCode::OK, "ready, degraded: Redis does not answer; slots are counted on a local share")
    } else {
        (StatusCode::OK, "ready")
    }
}
