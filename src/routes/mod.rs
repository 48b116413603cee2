//! Paths → handlers. Nothing but the route table lives here.

mod bfl_webhooks;
mod files;
mod health;
mod images;
mod metrics;
mod models;
mod playground;
mod usage;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::delivery::FILES_PATH;
use crate::middleware::declared_length_within;
use crate::state::AppState;

/// Routes that need a client token.
pub fn api(state: &AppState) -> Router<AppState> {
    // A declared length over the limit is refused by `JsonFields` before the body is read.
    let json = Router::new()
        .route("/v1/images/generations", post(images::create_image))
        .route("/v1/async/images/generations", post(images::create_image_async))
        .route("/v1/async/jobs/{id}", get(images::get_async_job))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{id}", get(models::get_model))
        .layer(DefaultBodyLimit::max(state.server.max_json_bytes));
    // Edits stream their uploads and enforce per-file and per-part limits themselves.
    let edits = Router::new()
        .route("/v1/images/edits", post(images::edit_image))
        .route("/v1/async/images/edits", post(images::edit_image_async))
        .layer(DefaultBodyLimit::disable());
    json.merge(edits)
}

/// Routes for the operator, behind the admin token (checked by each handler).
pub fn admin() -> Router<AppState> {
    Router::new().route("/v1/usage", get(usage::usage)).route("/metrics", get(metrics::metrics))
}

/// Routes BFL calls: authenticated by the webhook secret, not a client token.
pub fn upstream() -> Router<AppState> {
    let limit = crate::bfl::webhook::MAX_WEBHOOK_BYTES;
    Router::new()
        .route("/v1/bfl/webhooks/{token}", post(bfl_webhooks::receive_bfl_webhook))
        .layer(DefaultBodyLimit::max(limit))
        .route_layer(axum::middleware::from_fn(move |req, next| declared_length_within(limit, req, next)))
}

/// Re-hosted images behind signed links: no client token (the signature is the credential).
pub fn files() -> Router<AppState> {
    Router::new().route(&format!("{FILES_PATH}/{{name}}"), get(files::get_file))
}

/// The playground page and its files: public (its API calls carry the user's token).
pub fn playground() -> Router<AppState> {
    Router::new()
        .route("/", get(playground::page))
        .route("/playground", get(playground::page))
        .route("/playground/", get(playground::page))
        .route("/playground/app.js", get(playground::script))
        .route("/playground/style.css", get(playground::style))
}

/// Routes a load balancer calls.
pub fn probes() -> Router<AppState> {
    Router::new().route("/healthz", get(health::live)).route("/readyz", get(health::ready))
}
