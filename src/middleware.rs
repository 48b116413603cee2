//! Cross-cutting request handling: request ids, client-token checks, panic containment. The one
//! place the layer stack is assembled is `server::app`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::{ApiError, ErrorCause};
use crate::state::AppState;
use crate::telemetry::metrics;

pub const REQUEST_ID: &str = "x-request-id";

/// The request's id, in its extensions for handlers that record it (usage events).
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// A caller's id is kept when it is short and plain; otherwise we make one.
fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Puts `x-request-id` on every response and runs the request inside a span that carries it.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::new_v4().simple()));
    // The request's one log line ("done") carries these, filled in by the handler as it learns
    // them: the client, the model, BFL's task and how long BFL took, the prompt if configured.
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        client = Empty,
        model = Empty,
        task = Empty,
        upstream_ms = Empty,
        prompt = Empty,
    );
    req.extensions_mut().insert(RequestId(Arc::from(id.as_str())));
    let started = Instant::now();
    let route = RouteSlot::default();
    req.extensions_mut().insert(route.clone());
    let mut response = next.run(req).instrument(span.clone()).await;
    metrics::http_request(&route.get(), response.status().as_u16(), started.elapsed());
    span.in_scope(|| {
        let (status, ms) = (response.status().as_u16(), started.elapsed().as_millis() as u64);
        match response.extensions().get::<ErrorCause>() {
            Some(ErrorCause(cause)) => tracing::error!(status, ms, %cause, "done with an internal error"),
            None => tracing::info!(status, ms, "done"),
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Where the route pattern a request matched is noted (by `note_route`, inside the router), for
/// the request-log layer outside it. Requests that matched no route are `unmatched`.
#[derive(Clone, Default)]
pub struct RouteSlot(Arc<std::sync::OnceLock<String>>);

impl RouteSlot {
    fn get(&self) -> String {
        self.0.get().cloned().unwrap_or_else(|| "unmatched".to_owned())
    }
}

/// Notes the matched route pattern (`/v1/async/jobs/{id}`, never the path itself) in the slot.
pub async fn note_route(req: Request, next: Next) -> Response {
    note(&req);
    next.run(req).await
}

fn note(req: &Request) {
    if let (Some(path), Some(slot)) =
        (req.extensions().get::<MatchedPath>(), req.extensions().get::<RouteSlot>())
    {
        let _ = slot.0.set(path.as_str().to_owned());
    }
}

/// Notes the route (as `note_route` does; one layer rather than two, since each layer costs every
/// request in flight a boxed future and a clone of the service under it), then finds the
/// request's client (`clients::Clients::identify`, constant time) or answers 401; the `Caller`
/// goes into the request's extensions for the handlers.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    note(&req);
    match state.clients.identify(req.headers()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// A declared `Content-Length` above `limit` is a 413 before any of the body is read.
pub async fn declared_length_within(limit: usize, req: Request, next: Next) -> Response {
    match ApiError::declared_too_large(req.headers(), limit) {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

/// A panic in a handler becomes an OpenAI-shaped 500 instead of a dropped connection.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    ApiError::internal(format!("a request handler panicked: {what}")).into_response()
}
