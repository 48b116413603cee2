//! Paths → handlers. Nothing but the route table lives here.

mod health;
mod images;
mod models;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// Routes that need a client token.
pub fn api(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/images/generations", post(images::generations))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .layer(axum::extract::DefaultBodyLimit::max(state.settings.server.max_json_bytes))
}

/// Routes a load balancer calls.
pub fn probes() -> Router<AppState> {
    Router::new().route("/healthz", get(health::live)).route("/readyz", get(health::ready))
}
