//! The bodies BFL answers with, in one place: FastAPI-style `{"detail": …}` errors, the poll
//! result document, and the CDN's XML errors for result URLs.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::fields::FieldError;
use super::schema::Rejection;

pub(super) const NOT_AUTHENTICATED: &str = "Not authenticated";
pub(super) const NO_CREDITS: &str = "Insufficient credits. Please add credits to your account to continue.";
pub(super) const TOO_MANY_TASKS: &str = "You have reached the maximum number of active tasks";

/// `{"detail": "<text>"}` with this status.
pub(super) fn detail(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "detail": text }))).into_response()
}

pub(super) fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

pub(super) fn forbidden() -> Response {
    detail(StatusCode::FORBIDDEN, NOT_AUTHENTICATED)
}

/// FastAPI's 422 in either of its shapes.
pub(super) fn unprocessable(r: &Rejection) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "detail": r.detail() }))).into_response()
}

/// A single list-form 422 item at `loc`.
pub(super) fn unprocessable_at(loc: Vec<Value>, kind: &'static str, msg: &str, input: Value) -> Response {
    let item = FieldError { loc, kind, msg: msg.to_owned(), input };
    unprocessable(&Rejection::List(vec![item]))
}

/// What BFL answers with a given error status, for `[submit:CODE]`, `[poll-status:CODE]` and
/// injected faults.
pub(super) fn status_reply(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status.as_u16() {
        400 => detail(status, "Bad request"),
        402 => detail(status, NO_CREDITS),
        403 => forbidden(),
        404 => not_found(),
        422 => unprocessable_at(
            vec![json!("body"), json!("prompt")],
            "string_type",
            "Input should be a valid string",
            Value::Null,
        ),
        429 => detail(status, TOO_MANY_TASKS),
        500 => detail(status, "Internal Server Error"),
        503 => detail(status, "Service Unavailable"),
        _ => detail(status, status.canonical_reason().unwrap_or("Simulated error")),
    }
}

/// The 404 a poll gets for an id that is unknown (or not yet visible).
pub(super) fn task_not_found(id: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "id": id, "status": "Task not found" }))).into_response()
}

/// A `ResultResponse` document.
pub(super) fn poll(id: &str, status: &str, result: Value, progress: Value, details: Value) -> Response {
    (StatusCode::OK, Json(result_document(id, status, result, progress, details))).into_response()
}

/// The `ResultResponse` JSON: a poll's answer, and the body of a webhook.
pub(super) fn result_document(
    id: &str,
    status: &str,
    result: Value,
    progress: Value,
    details: Value,
) -> Value {
    json!({
        "id": id,
        "status": status,
        "result": result,
        "progress": progress,
        "details": details,
        "preview": null,
    })
}

/// A 200 whose body is not JSON, as a misbehaving proxy might send.
pub(super) fn garbage(id: &str) -> Response {
    let body = format!("{{\"id\": \"{id}\", \"status\": \"Pen");
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The delivery CDN's refusal of a result URL (it speaks XML, not FastAPI).
pub(super) fn cdn_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}
