//! The simulator's routes (paths → handlers) and the request details every handler reads.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::routing::{get, post};

use super::state::Simulator;
use super::{introspect, poll, replies, results, submit};

/// Submits carry base64 reference images, up to eight of them.
pub(super) const SUBMIT_BODY_LIMIT: usize = 256 * 1024 * 1024;

impl Simulator {
    /// BFL's API surface. Routing errors answer like FastAPI (`{"detail":"Not Found"}`); there are
    /// no CORS headers, as on BFL.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/get_result", get(poll::poll))
            .route("/v1/{model}", post(submit::submit).layer(DefaultBodyLimit::max(SUBMIT_BODY_LIMIT)))
            .route("/results/{file}", get(results::download))
            .route("/sim/stats", get(introspect::stats))
            .route("/sim/tasks", get(introspect::tasks))
            .fallback(|| async { replies::not_found() })
            .method_not_allowed_fallback(|| async {
                replies::detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            })
            .with_state(Arc::clone(self))
    }
}

/// The `x-key` header, if present and printable.
pub(super) fn x_key(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-key").and_then(|v| v.to_str().ok())
}

/// `http://<host>` from the request, for `polling_url` and result URLs when no public base is set.
pub(super) fn base_url(headers: &HeaderMap, uri: &Uri) -> String {
    let from_header = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or(from_header)
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && !b"/?#@\\".contains(&b)))
        .unwrap_or("localhost");
    format!("http://{host}")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_base_url_follows_the_host_header_and_ignores_junk() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4000"));
        assert_eq!(base_url(&h, &Uri::from_static("/v1/flux-dev")), "http://127.0.0.1:4000");
        h.insert(header::HOST, HeaderValue::from_static("evil/path"));
        assert_eq!(base_url(&h, &Uri::from_static("/v1/flux-dev")), "http://localhost");
        assert_eq!(base_url(&HeaderMap::new(), &Uri::from_static("/x")), "http://localhost");
    }
}
