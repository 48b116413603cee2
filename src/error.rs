//! `ApiError`: every way a request can fail, mapped explicitly to the OpenAI error body, an HTTP
//! status and the retry headers the OpenAI SDKs obey (PRODUCT.md section 4). Turning a response
//! into an error has no side effect: an internal error's cause rides in the response extensions
//! (`ErrorCause`) and the request-log middleware logs it once.
#![warn(clippy::wildcard_enum_match_arm)]

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The client's request breaks a rule; nothing was sent upstream (or BFL refused it with 400/422).
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String>, code: &'static str },
    #[error("missing or invalid client token")]
    Unauthorized,
    /// The client's key does not allow this model.
    #[error("this client key may not use the model `{0}`")]
    ModelNotAllowed(String),
    /// The client is over one of its own limits (`code`: rate, concurrency or budget).
    #[error("{message}")]
    ClientLimit { code: &'static str, message: String, retry_after: Duration, retry_useful: bool },
    /// The `Idempotency-Key` was used before with a different request.
    #[error(
        "this Idempotency-Key was already used with a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    /// No such async job for this client (another client's jobs are as unknown as missing ones).
    #[error("no job `{0}`")]
    JobNotFound(String),
    /// A call to the BFL webhook endpoint without the webhook secret (or its signature).
    #[error("the webhook is not signed with this gateway's webhook secret")]
    WebhookUnauthorized,
    /// BFL moderated the prompt or the result. Not billed.
    #[error("{message}")]
    Moderated { message: String },
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// A link to a re-hosted image whose signature does not hold, or whose time is up.
    #[error("{message}")]
    LinkRefused { message: String, code: &'static str },
    /// No re-hosted image by that name (or it is no longer kept).
    #[error("no such image: it never existed here or is no longer kept")]
    FileNotFound,
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    #[error("{message}")]
    PayloadTooLarge { message: String, param: Option<String> },
    /// The request body stopped arriving for `server.body_timeout_ms`; nothing was submitted.
    #[error(
        "the request body stopped arriving for longer than the server's body timeout; nothing was submitted"
    )]
    BodyTimeout,
    /// The gateway's own room (the process-wide upload budgets) is spent for now; a retry after
    /// `retry_after` is likely to find room.
    #[error("{message}")]
    Overloaded { message: String, param: Option<String>, retry_after: Duration },
    /// Upstream capacity (slots, BFL 429s, credits) is exhausted for now.
    #[error("{message}")]
    Capacity { message: String, retry_after: Duration, retry_useful: bool },
    /// BFL failed, or answered something we cannot use, after the retries allowed; nothing was
    /// charged, so a retry is safe.
    #[error("{0}")]
    Upstream(String),
    /// As `Upstream`, but BFL may already have taken (and charged) the job: a retry could pay twice.
    #[error("{0}")]
    UpstreamAfterSubmit(String),
    /// The model's deadline passed. `accepted`: BFL had taken the job (a retry would pay twice).
    #[error("the image was not ready within the model's deadline of {} s", deadline.as_secs())]
    DeadlineExceeded { deadline: Duration, accepted: bool },
    /// The gateway cannot deliver the finished image now (no memory budget for its base64 within
    /// the deadline) or at all (larger than the whole budget). BFL has run (and charged) the job,
    /// so SDKs are told not to retry on their own; `retry_after` says when room is likely.
    #[error("{message}")]
    Unavailable { message: String, retry_after: Option<Duration> },
    /// A fault of ours. The cause is logged by the request log; the client sees no detail.
    #[error("internal error")]
    Internal { cause: String },
}

/// The cause of an internal error, carried in the response extensions for the request log.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::InvalidRequest { message: message.into(), param: Some(param.into()), code: "invalid_value" }
    }

    pub fn internal(cause: impl Into<String>) -> ApiError {
        ApiError::Internal { cause: cause.into() }
    }

    pub fn too_large(param: Option<String>, message: impl Into<String>) -> ApiError {
        ApiError::PayloadTooLarge { message: message.into(), param }
    }

    /// A 413 when the request declares (`Content-Length`) a body above `limit`: refused before
    /// any of it is read.
    pub fn declared_too_large(headers: &axum::http::HeaderMap, limit: usize) -> Option<ApiError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        (declared > limit as u64).then(|| {
            ApiError::too_large(
                None,
                format!("the request body is {declared} bytes; this endpoint accepts at most {limit}"),
            )
        })
    }

    /// True when `error` (a body read failure, at any depth) is the body timeout firing.
    pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut current = Some(error);
        while let Some(e) = current {
            if e.is::<tower_http::timeout::TimeoutError>() {
                return true;
            }
            current = e.source();
        }
        false
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::ClientLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::JobNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized | ApiError::WebhookUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Moderated { .. } => StatusCode::FORBIDDEN,
            ApiError::ModelNotFound(_) | ApiError::RouteNotFound(_) | ApiError::FileNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::LinkRefused { .. } => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Capacity { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(_) | ApiError::UpstreamAfterSubmit(_) => StatusCode::BAD_GATEWAY,
            ApiError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. }
            | ApiError::Unauthorized
            | ApiError::IdempotencyKeyReused
            | ApiError::JobNotFound(_)
            | ApiError::ModelNotAllowed(_)
            | ApiError::WebhookUnauthorized
            | ApiError::Moderated { .. }
            | ApiError::ModelNotFound(_)
            | ApiError::RouteNotFound(_)
            | ApiError::LinkRefused { .. }
            | ApiError::FileNotFound
            | ApiError::MethodNotAllowed(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::BodyTimeout => "invalid_request_error",
            ApiError::Capacity { .. } | ApiError::ClientLimit { .. } => "rate_limit_error",
            ApiError::Upstream(_) | ApiError::UpstreamAfterSubmit(_) | ApiError::DeadlineExceeded { .. } => {
                "upstream_error"
            }
            ApiError::Overloaded { .. } | ApiError::Unavailable { .. } | ApiError::Internal { .. } => {
                "server_error"
            }
        }
    }

    /// The `code` of the OpenAI error object.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidRequest { code, .. } => Some(code),
            ApiError::Unauthorized => Some("invalid_api_key"),
            ApiError::IdempotencyKeyReused => Some("idempotency_key_reused"),
            ApiError::JobNotFound(_) => Some("job_not_found"),
            ApiError::ModelNotAllowed(_) => Some("model_not_allowed"),
            ApiError::ClientLimit { code, .. } => Some(code),
            ApiError::WebhookUnauthorized => Some("invalid_webhook_signature"),
            ApiError::Moderated { .. } => Some("moderation_blocked"),
            ApiError::ModelNotFound(_) => Some("model_not_found"),
            ApiError::RouteNotFound(_) => Some("unknown_url"),
            ApiError::LinkRefused { code, .. } => Some(code),
            ApiError::FileNotFound => Some("file_not_found"),
            ApiError::MethodNotAllowed(_) => Some("method_not_allowed"),
            ApiError::PayloadTooLarge { .. } => Some("payload_too_large"),
            ApiError::BodyTimeout => Some("request_timeout"),
            ApiError::Capacity { .. } => Some("upstream_capacity_exhausted"),
            ApiError::Overloaded { .. } => Some("server_overloaded"),
            ApiError::Upstream(_) | ApiError::UpstreamAfterSubmit(_) => Some("upstream_error"),
            ApiError::DeadlineExceeded { .. } => Some("upstream_timeout"),
            ApiError::Unavailable { .. } => Some("result_not_deliverable"),
            ApiError::Internal { .. } => None,
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. }
            | ApiError::PayloadTooLarge { param, .. }
            | ApiError::Overloaded { param, .. } => param.as_deref(),
            ApiError::ModelNotFound(_) => Some("model"),
            ApiError::JobNotFound(_) => Some("id"),
            ApiError::ModelNotAllowed(_) => Some("model"),
            ApiError::BodyTimeout
            | ApiError::Unauthorized
            | ApiError::IdempotencyKeyReused
            | ApiError::ClientLimit { .. }
            | ApiError::WebhookUnauthorized
            | ApiError::Moderated { .. }
            | ApiError::RouteNotFound(_)
            | ApiError::LinkRefused { .. }
            | ApiError::FileNotFound
            | ApiError::MethodNotAllowed(_)
            | ApiError::Capacity { .. }
            | ApiError::Upstream(_)
            | ApiError::UpstreamAfterSubmit(_)
            | ApiError::DeadlineExceeded { .. }
            | ApiError::Unavailable { .. }
            | ApiError::Internal { .. } => None,
        }
    }

    /// `Some(false)` where an SDK retry would fail again or pay twice; `None` leaves the SDK's default.
    fn should_retry(&self) -> Option<bool> {
        match self {
            ApiError::InvalidRequest { .. }
            | ApiError::IdempotencyKeyReused
            | ApiError::JobNotFound(_)
            | ApiError::ModelNotAllowed(_)
            | ApiError::Moderated { .. }
            | ApiError::ModelNotFound(_)
            | ApiError::RouteNotFound(_)
            | ApiError::LinkRefused { .. }
            | ApiError::FileNotFound
            | ApiError::MethodNotAllowed(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::UpstreamAfterSubmit(_)
            | ApiError::Unavailable { .. } => Some(false),
            ApiError::DeadlineExceeded { accepted, .. } => Some(!accepted),
            ApiError::Capacity { retry_useful, .. } | ApiError::ClientLimit { retry_useful, .. } => {
                Some(*retry_useful)
            }
            ApiError::Overloaded { .. } => Some(true),
            // Nothing was submitted: a retry that sends the body promptly is fine.
            ApiError::BodyTimeout
            | ApiError::Unauthorized
            | ApiError::WebhookUnauthorized
            | ApiError::Upstream(_)
            | ApiError::Internal { .. } => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Capacity { retry_after, .. }
            | ApiError::Overloaded { retry_after, .. }
            | ApiError::ClientLimit { retry_after, .. } => Some(*retry_after),
            ApiError::Unavailable { retry_after, .. } => *retry_after,
            ApiError::BodyTimeout
            | ApiError::InvalidRequest { .. }
            | ApiError::Unauthorized
            | ApiError::IdempotencyKeyReused
            | ApiError::JobNotFound(_)
            | ApiError::ModelNotAllowed(_)
            | ApiError::WebhookUnauthorized
            | ApiError::Moderated { .. }
            | ApiError::ModelNotFound(_)
            | ApiError::RouteNotFound(_)
            | ApiError::LinkRefused { .. }
            | ApiError::FileNotFound
            | ApiError::MethodNotAllowed(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::Upstream(_)
            | ApiError::UpstreamAfterSubmit(_)
            | ApiError::DeadlineExceeded { .. }
            | ApiError::Internal { .. } => None,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Details<'a>,
}

#[derive(Serialize)]
struct Details<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'static str>,
}

impl ApiError {
    /// The OpenAI error object, `{"error": {"message", "type", "param", "code"}}`: the body of an
    /// error reply, the data of a stream's `error` event, the `error` of a failed async job.
    pub fn body(&self) -> serde_json::Value {
        let body = Body {
            error: Details {
                message: self.to_string(),
                kind: self.kind(),
                param: self.param(),
                code: self.code(),
            },
        };
        serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(retry) = self.should_retry() {
            headers.insert("x-should-retry", HeaderValue::from_static(if retry { "true" } else { "false" }));
        }
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            headers.insert("retry-after-ms", HeaderValue::from(after.as_millis().max(1) as u64));
        }
        if let ApiError::Internal { cause } = self {
            response.extensions_mut().insert(ErrorCause(cause));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_after_bfl_accepted_the_job_tells_sdks_not_to_retry() {
        let response =
            ApiError::DeadlineExceeded { deadline: Duration::from_secs(60), accepted: true }.into_response();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(response.headers()["x-should-retry"], "false");
    }

    #[test]
    fn an_undeliverable_result_is_a_503_with_retry_after_that_sdks_do_not_retry_on_their_own() {
        let response =
            ApiError::Unavailable { message: "busy".into(), retry_after: Some(Duration::from_secs(3)) }
                .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.headers()["x-should-retry"], "false");
    }

    #[test]
    fn capacity_errors_carry_retry_after_in_whole_seconds() {
        let response = ApiError::Capacity {
            message: "busy".into(),
            retry_after: Duration::from_millis(1500),
            retry_useful: true,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()["retry-after-ms"], "1500");
    }
}
