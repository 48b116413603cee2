//! `GET /results/{id}.{ext}?exp=&sig=`: the delivery CDN. Checks the signature and expiry, then
//! serves the task's image, encoding it on first download and caching the bytes with the task
//! (so the bytes go when the task is forgotten, at the URL's expiry).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Instant;

use super::images;
use super::replies::cdn_error;
use super::signing::UrlError;
use super::state::Simulator;
use super::tasks::Phase;

pub(super) async fn download(
    State(sim): State<Arc<Simulator>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Path(file)) = path else { return missing() };
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let exp = q.get("exp").and_then(|e| e.parse::<u64>().ok());
    let (Some(exp), Some(sig)) = (exp, q.get("sig")) else {
        return cdn_error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Server failed to authenticate the request.",
        );
    };
    let now = Instant::now();
    match sim.signer.verify(&file, exp, sig, sim.unix_ms(now)) {
        Ok(()) => {}
        Err(UrlError::BadSignature) => {
            return cdn_error(StatusCode::FORBIDDEN, "AuthenticationFailed", "Signature did not match.");
        }
        Err(UrlError::Expired) => return expired(),
    }
    let Some((id, ext)) = file.rsplit_once('.') else { return missing() };
    let found = {
        let mut st = sim.lock();
        // Only this simulator signs, and only for tasks it had: a valid URL for a task it no
        // longer has means the task was forgotten at the URL's expiry (in the same millisecond).
        let Some(t) = st.table.get(id, now) else { return expired() };
        let servable = t.status == "Ready" && t.phase(now) == Phase::Done && t.format.ext() == ext;
        servable.then(|| (Arc::clone(&t.image), t.size, t.seed, t.format))
    };
    let Some((cell, (w, h), seed, format)) = found else { return missing() };
    let encoded = cell
        .get_or_try_init(|| async move {
            let job = tokio::task::spawn_blocking(move || images::render(w, h, seed, format));
            match job.await {
                Ok(Ok(bytes)) => Ok(Bytes::from(bytes)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    match encoded {
        Ok(bytes) => {
            sim.downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ([(header::CONTENT_TYPE, format.content_type())], bytes.clone()).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, width = w, height = h, "simulator could not encode a result image");
            cdn_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "The server encountered an internal error.",
            )
        }
    }
}

fn expired() -> Response {
    let msg = "Signed expiry time has passed; the result URL is no longer valid.";
    cdn_error(StatusCode::FORBIDDEN, "AuthenticationFailed", msg)
}

fn missing() -> Response {
    cdn_error(StatusCode::NOT_FOUND, "BlobNotFound", "The specified blob does not exist.")
}
