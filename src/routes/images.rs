//! `POST /v1/images/generations` and `POST /v1/images/edits`: read, validate, dispatch, deliver.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::delivery::Wanted;
use crate::error::ApiError;
use crate::job::ImageJob;
use crate::openai::{ImagesResponse, JsonFields};
use crate::state::AppState;
use crate::upload::{self, EditUpload, RefRule};

pub(super) async fn create_image(
    State(state): State<AppState>,
    JsonFields(fields): JsonFields,
) -> Result<Json<ImagesResponse>, ApiError> {
    let job = ImageJob::parse(&fields, &state.catalog, &state.server.default_model).await?;
    run(&state, job).await.map(Json)
}

/// Multipart (what the SDKs send) or the JSON form with `images: [{"image_url": …}]`.
pub(super) async fn edit_image(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImagesResponse>, ApiError> {
    let upload = read_edit(&state, &headers, body).await?;
    let job =
        ImageJob::parse_edit(&upload.fields, upload.references, &state.catalog, &state.server.default_model)
            .await?;
    run(&state, job).await.map(Json)
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

/// Starts the job, waits for it within the model's deadline, and delivers the image.
async fn run(state: &AppState, job: ImageJob) -> Result<ImagesResponse, ApiError> {
    let (response_format, output_format, limit) =
        (job.response_format, job.output_format, job.model.deadline);
    let handle = state.dispatcher.start(job)?;
    let wanted = Wanted { response_format, output_format, deadline: handle.deadline(), limit };
    let finished = handle.outcome().await?;
    // Boxed: the delivery's state (a download, base64) exists only once the image is ready, not
    // for the whole wait of every request in flight.
    Box::pin(state.delivery.respond(&finished, wanted)).await
}
