//! `POST /v1/bfl/webhooks/{token}`: BFL calling back when a task ends. No client token (BFL has
//! none): the webhook secret is the authentication, checked before anything else.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::bfl::webhook::MAX_WEBHOOK_BYTES;
use crate::dispatch::Delivered;
use crate::error::ApiError;
use crate::state::AppState;

pub(super) async fn receive_bfl_webhook(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::too_large(None, format!("a webhook body is at most {MAX_WEBHOOK_BYTES} bytes"))
                .into_response();
        }
        Err(e) => {
            return ApiError::invalid("body", format!("the webhook body could not be read: {e}"))
                .into_response();
        }
    };
    match state.dispatcher.bfl_webhooks().deliver(&token, &headers, &body) {
        // A replay is answered like the first delivery: BFL has nothing to retry.
        Delivered::Accepted | Delivered::Replayed => Json(json!({"received": true})).into_response(),
        Delivered::Unauthorized => ApiError::WebhookUnauthorized.into_response(),
        Delivered::Off => {
            ApiError::RouteNotFound("BFL webhooks are not on for this gateway".to_owned()).into_response()
        }
        Delivered::Unknown => {
            // Another replica may follow the task: an authentic webhook is passed to all of them.
            let forwarded = match &state.webhook_forwarder {
                Some(forwarder) => forwarder.forward(&token, &headers, &body).await,
                None => false,
            };
            if forwarded {
                return Json(json!({"received": true})).into_response();
            }
            ApiError::RouteNotFound("an unknown or expired webhook token".to_owned()).into_response()
        }
        Delivered::Unreadable => {
            ApiError::invalid("body", "the webhook body is not a BFL result document").into_response()
        }
    }
}
