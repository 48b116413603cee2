//! `GET /v1/usage?since=<unix seconds>`: billed images, price, BFL's cost and failures per client
//! and model, for the admin token (`server.admin_token_sha256`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

pub(super) async fn usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if !state.clients.is_admin(&headers) {
        return Err(ApiError::Unauthorized);
    }
    let since = match query.get("since").map(|s| s.trim()) {
        None | Some("") => 0,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| ApiError::invalid("since", "`since` must be a unix time in seconds"))?,
    };
    Ok(Json(json!({"object": "list", "data": state.usage.rows(since).await})))
}
