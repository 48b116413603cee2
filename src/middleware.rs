//! Cross-cutting request handling: the request log (ids, span, log line, metrics), route noting
//! and client-token checks (`RouteGuard`), panic containment. The one
//! place the layer stack is assembled is `server::app`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready};
use tracing::Instrument;
use tracing::field::Empty;

use crate::clients::Clients;
use crate::error::{ApiError, ErrorCause};
use crate::telemetry::metrics;

pub const REQUEST_ID: &str = "x-request-id";

/// The request's id, in its extensions for handlers that record it (usage events).
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// A caller's id is kept when it is short and plain; otherwise we make one.
fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Puts `x-request-id` on every response, runs the request inside a span that carries it, and
/// writes the request's log line and HTTP metrics when it is answered. A tower layer of its own
/// (not `from_fn`): its future is the inner one plus a few fields, with no box and no clone of
/// the service under it, for every request in flight.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLogLayer;

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
}

impl<S> tower::Service<Request> for RequestLog<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Logged<S::Future> {
        let id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| sane(v))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("req_{}", uuid::Uuid::new_v4().simple()));
        // The request's one log line ("done") carries these, filled in by the handler as it
        // learns them: the client, the model, BFL's task and how long BFL took, the prompt if
        // configured.
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
        let route = RouteSlot::default();
        req.extensions_mut().insert(route.clone());
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Logged { inner: inner.instrument(span), id, route, started: Instant::now() }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way, with what its log line needs.
    pub struct Logged<F> {
        #[pin]
        inner: tracing::instrument::Instrumented<F>,
        id: String,
        route: RouteSlot,
        started: Instant,
    }
}

impl<F, E> Future for Logged<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = match this.inner.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(response)) => response,
        };
        let elapsed = this.started.elapsed();
        metrics::http_request(&this.route.get(), response.status().as_u16(), elapsed);
        let (status, ms) = (response.status().as_u16(), elapsed.as_millis() as u64);
        let span = this.inner.as_ref().span().clone();
        span.in_scope(|| match response.extensions().get::<ErrorCause>() {
            Some(ErrorCause(cause)) => tracing::error!(status, ms, %cause, "done with an internal error"),
            None => tracing::info!(status, ms, "done"),
        });
        if let Ok(value) = HeaderValue::from_str(this.id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        Poll::Ready(Ok(response))
    }
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

/// Inside the router, on every route: notes the matched route pattern (`/v1/async/jobs/{id}`,
/// never the path itself) for the request log and, on routes that need a client token, finds the
/// request's client (`clients::Clients::identify`, constant time) or answers 401; the `Caller`
/// goes into the request's extensions for the handlers. A tower layer (not `from_fn`), so it
/// costs a request in flight neither a boxed future nor a clone of the service below it.
#[derive(Clone)]
pub struct RouteGuard {
    clients: Option<Arc<Clients>>,
}

impl RouteGuard {
    /// Routes open to anyone (or checking their own credential: signed links, BFL's secret).
    pub fn open() -> RouteGuard {
        RouteGuard { clients: None }
    }

    /// Routes that need a client token.
    pub fn authenticated(clients: Arc<Clients>) -> RouteGuard {
        RouteGuard { clients: Some(clients) }
    }
}

impl<S> tower::Layer<S> for RouteGuard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded { inner, clients: self.clients.clone() }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    clients: Option<Arc<Clients>>,
}

impl<S> tower::Service<Request> for Guarded<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if let (Some(path), Some(slot)) =
            (req.extensions().get::<MatchedPath>(), req.extensions().get::<RouteSlot>())
        {
            let _ = slot.0.set(path.as_str().to_owned());
        }
        if let Some(clients) = &self.clients {
            match clients.identify(req.headers()) {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                }
                Err(e) => return Either::Left(ready(Ok(e.into_response()))),
            }
        }
        Either::Right(self.inner.call(req))
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
