//! `POST /v1/images/generations` and `POST /v1/images/edits`: read, validate, dispatch, deliver.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header::CONTENT_TYPE};
use serde_json::Value;

use crate::delivery::Wanted;
use crate::error::ApiError;
use crate::job::ImageJob;
use crate::openai::{ImagesResponse, JsonFields};
use crate::state::AppState;
use crate::upload::{self, EditUpload};

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

async fn read_edit(state: &AppState, headers: &HeaderMap, body: Body) -> Result<EditUpload, ApiError> {
    let uploads = &state.uploads;
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.trim_start().to_ascii_lowercase().starts_with("multipart/form-data") {
        return upload::read_multipart(content_type, body, &uploads.limits).await;
    }
    let bytes = to_bytes(body, uploads.max_json_bytes).await.map_err(|e| {
        if ApiError::is_body_timeout(&e) {
            return ApiError::BodyTimeout;
        }
        ApiError::too_large(
            None,
            format!(
                "a JSON edit body may be at most {} bytes; send large images as multipart/form-data",
                uploads.max_json_bytes
            ),
        )
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => upload::read_json(map, &uploads.limits).await,
        _ => Err(ApiError::InvalidRequest {
            message: "send multipart/form-data with `image` files, or a JSON object with `images`".into(),
            param: None,
            code: "invalid_body",
        }),
    }
}

/// Starts the job, waits for it within the model's deadline, and delivers the image.
async fn run(state: &AppState, job: ImageJob) -> Result<ImagesResponse, ApiError> {
    let (response_format, output_format, limit) =
        (job.response_format, job.output_format, job.model.deadline);
    let handle = state.dispatcher.start(job)?;
    let wanted = Wanted { response_format, output_format, deadline: handle.deadline(), limit };
    let finished = handle.outcome().await?;
    state.delivery.respond(&finished, wanted).await
}
