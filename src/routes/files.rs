//! `GET /v1/images/files/{name}?expires=…&sig=…` (and HEAD): a re-hosted image, streamed from the
//! store. No client token: the link's signature is the credential. A name that is not a
//! content-addressed image name is a 404 before the store is asked.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, ORIGIN, VARY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};

use crate::delivery::Delivery;
use crate::error::ApiError;
use crate::records::ImageName;
use crate::state::AppState;

pub(super) async fn get_file(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let delivery = &state.delivery;
    let mut response = match serve(delivery, &method, &uri, name).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    // Also on errors, so a browser script can read why a link failed.
    allow_origin(delivery, &headers, response.headers_mut());
    response
}

async fn serve(
    delivery: &Delivery,
    method: &Method,
    uri: &Uri,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let store = delivery.store().ok_or(ApiError::FileNotFound)?;
    let Ok(Path(name)) = name else { return Err(ApiError::FileNotFound) };
    let name = ImageName::parse(&name).ok_or(ApiError::FileNotFound)?;
    let remaining = delivery.verify_link(&name, uri.query())?;
    let failed = |e| ApiError::internal(format!("image store: {e}"));
    let (size, body) = if method == Method::HEAD {
        let meta = store.head(&name).await.map_err(failed)?.ok_or(ApiError::FileNotFound)?;
        (meta.size, Body::empty())
    } else {
        let found = store.get(&name).await.map_err(failed)?.ok_or(ApiError::FileNotFound)?;
        // Streamed as it is read: a large image is never held whole here.
        (found.meta.size, Body::from_stream(found.into_stream()))
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(name.format().content_type()));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    // The bytes under a name never change; a cache may keep them as long as the link is good.
    let cache = format!("public, max-age={remaining}, immutable");
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert(CACHE_CONTROL, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("\"{}\"", name.as_str())) {
        headers.insert(ETAG, value);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// `Access-Control-Allow-Origin`: `*` when any origin may read, else the caller's `Origin` when
/// it is on `delivery.cors_origins` (with `Vary: Origin`, since the answer depends on it).
fn allow_origin(delivery: &Delivery, request: &HeaderMap, response: &mut HeaderMap) {
    if delivery.cors_allows_any() {
        response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        return;
    }
    response.append(VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = request.get(ORIGIN).filter(|o| o.to_str().is_ok_and(|o| delivery.cors_allows(o))) {
        response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
}
