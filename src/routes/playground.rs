//! The playground: one page (HTML, a vanilla JS module, a stylesheet) embedded in the binary and
//! served at `/` and `/playground`. It is public; everything it does goes through the public API
//! with the token the user types in it, kept in the browser's local storage only. The files live
//! beside this module in `playground/`; `server.playground = false` leaves these routes out.

use std::sync::LazyLock;

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Only the page's own files; result images may come from BFL's or the simulator's hosts (or be
/// `data:`/`blob:` URLs made from a stream's base64). API calls go to this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; \
                   connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// One embedded file with its type and a strong ETag of its bytes.
pub(super) struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Asset {
        let digest = Sha256::digest(body.as_bytes());
        Asset { body, content_type, etag: format!("\"{}\"", hex::encode(&digest[..12])) }
    }

    /// The file, or 304 when the browser's copy is current. `no-cache`: always revalidated, so a
    /// new binary's page never runs an old script.
    fn serve(&self, headers: &HeaderMap) -> Response {
        let fresh = headers
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|t| t.trim() == self.etag || t.trim() == "*"));
        let mut response =
            if fresh { StatusCode::NOT_MODIFIED.into_response() } else { self.body.into_response() };
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(etag) = HeaderValue::from_str(&self.etag) {
            h.insert(ETAG, etag);
        }
        h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
        h.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer"));
        h.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
        response
    }
}

static PAGE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("playground/index.html"), "text/html; charset=utf-8"));
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("playground/app.js"), "text/javascript; charset=utf-8"));
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("playground/style.css"), "text/css; charset=utf-8"));

pub(super) async fn page(headers: HeaderMap) -> Response {
    PAGE.serve(&headers)
}

pub(super) async fn script(headers: HeaderMap) -> Response {
    SCRIPT.serve(&headers)
}

pub(super) async fn style(headers: HeaderMap) -> Response {
    STYLE.serve(&headers)
}
