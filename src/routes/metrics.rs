//! `GET /metrics`: Prometheus text. Open when no admin token is configured (scrape it from inside
//! the network); with `server.admin_token_sha256`, only for that token.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::clients::AuthMode;
use crate::error::ApiError;
use crate::state::AppState;
use crate::telemetry::metrics::{self, Now};

pub(super) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let open = !state.clients.has_admin_token() || state.clients.auth() == AuthMode::None;
    if !open && !state.clients.is_admin(&headers) {
        return ApiError::Unauthorized.into_response();
    }
    let dispatcher = &state.dispatcher;
    let text = metrics::render(Now {
        jobs_in_flight: dispatcher.jobs_in_flight(),
        queue_length: dispatcher.queued(),
        slots_in_use: dispatcher.slots_by_key(),
        coordination_degraded: state.is_degraded(),
    });
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
