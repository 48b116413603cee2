//! `POST /v1/images/generations` and `POST /v1/images/edits`: read, validate, dispatch, deliver.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};

use crate::delivery::{Delivered, Delivery, Wanted, request_origin};
use crate::error::ApiError;
use crate::job::ImageJob;
use crate::openai::JsonFields;
use crate::state::AppState;
use crate::upload::{self, EditUpload, RefRule};

pub(super) async fn create_image(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    JsonFields(fields): JsonFields,
) -> Result<Response, ApiError> {
    let job = ImageJob::parse(&fields, &state.catalog, &state.server.default_model, state.job_limits).await?;
    run(&state, job, request_origin(&headers, &uri)).await
}

/// Multipart (what the SDKs send) or the JSON form with `images: [{"image_url": …}]`.
pub(super) async fn edit_image(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let upload = read_edit(&state, &headers, body).await?;
    let job = ImageJob::parse_edit(
        &upload.fields,
        upload.references,
        &state.catalog,
        &state.server.default_model,
        state.job_limits,
    )
    .await?;
    run(&state, job, request_origin(&headers, &uri)).await
}

/// Reads either form, refusing as early as it can: a declared length over the per-request cap
/// before any byte is read, too many references for the model as the parts arrive.
async fn read_edit(state: &AppState, headers: &HeaderMap, body: Body) -> Result<EditUpload, ApiError> {
    let uploads = &state.uploads;
    let content_length =
        headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    uploads.check_declared_length(content_length)?;
    let rule: &dyn RefRule = &*state.catalog;
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.trim_start().to_ascii_lowercase().starts_with("multipart/form-data") {
        return upload::read_multipart(content_type, body, uploads, rule).await;
    }
    upload::read_json_body(body, content_length, uploads, rule).await
}

/// Header saying how many of the `n` images asked for failed (the reply carries the others).
const FAILED_IMAGES: &str = "x-fluxgate-images-failed";

/// Starts one job per image asked for (each with its own slot), waits for them within the
/// model's deadline, and delivers the images in order. When some fail, the reply carries the
/// others and says how many failed; when all fail, the first error is the answer. An image made
/// for a client that has gone stays in the job store for its TTL. `origin` is where the request
/// came in (signed links to re-hosted images are built on it unless configured otherwise).
async fn run(state: &AppState, job: ImageJob, origin: Option<String>) -> Result<Response, ApiError> {
    let origin = origin.as_deref();
    let (response_format, output_format, limit, asked) =
        (job.response_format, job.output_format, job.model.deadline, job.n);
    let handles = state.dispatcher.start_all(job.fan_out())?;
    let deadline = handles.iter().map(|h| h.deadline()).min().unwrap_or_else(tokio::time::Instant::now);
    let wanted = Wanted { response_format, output_format, deadline, limit };
    let images = handles.into_iter().map(|handle| async move {
        let finished = handle.outcome().await?;
        // Boxed: the delivery's state (a download, base64) exists only once the image is ready,
        // not for the whole wait of every request in flight.
        Box::pin(state.delivery.datum(&finished, wanted, origin)).await
    });
    let (mut data, mut budget, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for image in futures_util::future::join_all(images).await {
        match image.map(Delivered::into_parts) {
            Ok((datum, held)) => {
                data.push(datum);
                budget.extend(held);
            }
            Err(e) => failures.push(e),
        }
    }
    let failed = failures.len();
    if data.is_empty() {
        return Err(failures
            .into_iter()
            .next()
            .unwrap_or_else(|| ApiError::internal("a request with no images")));
    }
    if failed > 0 {
        tracing::warn!(asked, failed, first = %failures[0], "some images of the request failed; replying with the rest");
    }
    let mut response = Json(Delivery::response(data, wanted)).into_response();
    // The reply is serialised: the images' share of the b64 budget can go.
    drop(budget);
    if asked > 1 {
        response.headers_mut().insert(FAILED_IMAGES, HeaderValue::from(failed));
    }
    Ok(response)
}
