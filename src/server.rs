//! The router with its whole layer stack, and serving with graceful shutdown: on the signal the
//! readiness turns 503 at once, the listener closes after `server.drain_delay_ms`, and in-flight
//! requests and background jobs finish.

use std::future::Future;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{from_fn, from_fn_with_state};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
use crate::middleware::{authenticate, panic_response, request_id};
use crate::routes;
use crate::state::AppState;

pub fn app(state: AppState) -> Router {
    let api = routes::api(&state).route_layer(from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(api)
        .merge(routes::probes())
        .fallback(|req: Request| async move {
            ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::MethodNotAllowed(format!("{} {}", req.method(), req.uri().path()))
        })
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn(request_id))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains: waits for open requests, then for jobs whose
/// client has gone (bounded by the configured grace period).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = state.clone();
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Readiness fails first, while requests are still served, so the load balancer has
            // time to stop sending before the listener closes.
            draining.start_draining();
            let delay = draining.server.drain_delay;
            tracing::info!(delay_ms = delay.as_millis() as u64, "shutting down: not ready, then draining");
            tokio::time::sleep(delay).await;
            tracing::info!("listener closed: finishing in-flight requests");
        })
        .await?;
    let tracker = state.dispatcher.tracker();
    tracker.close();
    if tokio::time::timeout(state.server.shutdown_grace, tracker.wait()).await.is_err() {
        tracing::warn!(jobs = tracker.len(), "shutdown grace period over with jobs still running");
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
