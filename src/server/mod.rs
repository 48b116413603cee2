//! The router with its whole layer stack, and serving it: our own accept loop (`connections`)
//! with a cap on open connections and header, body and idle timeouts, and a bounded shutdown.
//!
//! On the signal, readiness turns 503 at once while requests are still served for
//! `server.drain_delay_ms`; then the listener closes, connections with no request in progress are
//! closed (half-sent requests included), and requests in progress and background jobs get
//! `server.shutdown_grace_secs` to finish. After that `serve` returns whatever clients do.

mod connections;
mod signals;

pub use signals::shutdown_signal;

use std::future::Future;

use axum::Router;
use axum::extract::Request;
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout_at};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::error::ApiError;
use crate::middleware::{RequestLogLayer, RouteGuard, panic_response};
use crate::routes;
use crate::state::AppState;

use connections::{Connections, Phase};

pub fn app(state: AppState) -> Router {
    let api = routes::api(&state).route_layer(RouteGuard::authenticated(state.clients.clone()));
    let playground = if state.server.playground {
        routes::playground().route_layer(RouteGuard::open())
    } else {
        Router::new()
    };
    Router::new()
        .merge(api)
        .merge(playground)
        .merge(routes::admin().route_layer(RouteGuard::open()))
        .merge(routes::upstream().route_layer(RouteGuard::open()))
        // Re-hosted images: the link's signature is their credential, not a client token.
        .merge(routes::files().route_layer(RouteGuard::open()))
        .merge(routes::probes().route_layer(RouteGuard::open()))
        .fallback(|req: Request| async move {
            ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::MethodNotAllowed(format!("{} {}", req.method(), req.uri().path()))
        })
        // A body that stalls this long between two chunks fails its read (408 where it is read).
        .layer(RequestBodyTimeoutLayer::new(state.server.body_timeout))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(RequestLogLayer)
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains (see the module doc) and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = state.server.clone();
    let connections = Connections::start(listener, app(state.clone()), &settings);
    shutdown.await;
    // Readiness fails first, while requests are still served, so the load balancer has time to
    // stop sending before the listener closes.
    state.start_draining();
    tracing::info!(
        delay_ms = settings.drain_delay.as_millis() as u64,
        "shutting down: not ready, then draining"
    );
    tokio::time::sleep(settings.drain_delay).await;
    connections.set_phase(Phase::Draining);
    // Jobs still queued for a slot would start paying only now: they are refused instead.
    state.dispatcher.stop_admitting();
    // Webhook deliveries in flight finish their attempt; none waits for another retry.
    state.webhooks.stop_retrying();
    state.delivery.stop_sweeping();
    let grace_ends = Instant::now() + settings.shutdown_grace;
    tracing::info!(
        open = connections.open(),
        "listener closed: idle and half-sent connections closed, finishing requests in progress"
    );
    let jobs = state.dispatcher.tracker();
    jobs.close();
    let finished = timeout_at(grace_ends, async {
        connections.wait().await;
        jobs.wait().await;
        state.delivery.sweeping().wait().await;
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            connections = connections.open(),
            jobs = jobs.len(),
            "shutdown grace period over with work still running; exiting anyway"
        );
        connections.set_phase(Phase::Closed);
    }
    if let Some(ledger) = &state.shared_ledger {
        ledger.stop();
    }
    if let Some(forwarder) = &state.webhook_forwarder {
        forwarder.stop();
    }
    if let Some(holds) = &state.shared_holds {
        holds.stop();
    }
    Ok(())
}
